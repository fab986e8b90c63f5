"""Renaming a node: kept across restarts, seen by peers, editable in Settings."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.nodes import poll

pytestmark = pytest.mark.slow


def post(node, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **node.auth()}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_rename_reaches_peers_and_survives_a_restart(node_factory, tmp_path):
    founder = node_factory("--client", home=tmp_path / "founder")
    friend = node_factory("--client", "--join", founder.invite_token())
    poll(lambda: founder.node_id in friend.peer_ids(), 10, message="the friend to join")
    assert post(founder, "/api/name", {"name": "  Alice's laptop "}) == (200, {"name": "Alice's laptop"})
    poll(lambda: [p["name"] for p in friend.status()["peers"]] == ["Alice's laptop"], 10,
         message="the new name to reach the friend")
    founder.stop()
    again = node_factory("--client", home=tmp_path / "founder")
    assert again.status()["node"]["name"] == "Alice's laptop"


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there"])
def test_bad_names_are_refused(node_factory, name):
    node = node_factory("--client")
    status, body = post(node, "/api/name", {"name": name})
    assert status == 400 and body["error"]["param"] == "name"


def test_settings_rename_button_asks_for_the_new_name(qtbot):
    from dataclasses import replace

    from meshdesk.ui.settings_view import SettingsView
    from tests.test_ui_snapshots import starting

    view = SettingsView()
    qtbot.addWidget(view)
    view.show_status(replace(starting(), node=replace(starting().node, name="old")))
    view.name_edit.setText("new name")
    with qtbot.waitSignal(view.rename_requested) as signal:
        view.rename_button.click()
    assert signal.args == ["new name"]
