"""Invite links through the real app entry (`meshdesk LINK`, as the desktop entry's `%u` runs
it): offscreen windows and headless runs, real nodes on 127.0.0.1. A link is shown, never
joined, until the user confirms; a node in a mesh with members keeps it unless the user also
confirms leaving it; a link opened while MeshDesk runs goes to the running window."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.nodes import NodeProcess, poll, run_meshdesk
from tests.nodes import test_environment as child_environment

pytestmark = pytest.mark.slow

# The real `meshdesk` entry (`cli.main`) with "the user" at the Join view: when a link is
# shown, it reports the offer, then waits for the test's go-ahead files in the home.
USER_AT_THE_JOIN_VIEW = textwrap.dedent("""
    import asyncio, pathlib, sys
    from meshdesk.ui import controller as controller_module
    from meshdesk.app.cli import main

    home = pathlib.Path(sys.argv[sys.argv.index("--home") + 1])
    shown = controller_module.DesktopController.open_link
    playing = []

    def say(*words):
        print(*words, flush=True)

    async def until(condition, timeout=60):
        # Widget states and files the test writes: polled against a deadline.
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(f"timed out after {timeout} s")
            await asyncio.sleep(0.05)

    async def play(controller, join):
        await until(lambda: (home / "go").exists())
        if not join.leave_check.isHidden():
            join.confirm_button.click()  # not ticked yet: disabled
            say("UNTICKED CONFIRM ENABLED", join.confirm_button.isEnabled())
            await controller.join(join.offer.text, False, join)  # the node's own check, as an API would ask
            say("REFUSED", join.result.text())
            await until(lambda: (home / "tick").exists())
            join.leave_check.setChecked(True)
        join.confirm_button.click()
        await until(lambda: join.result.text() == "Joined the mesh.", 30)
        say("JOINED:", join.result.text())
        await until(lambda: (home / "done").exists())
        controller.window.close()  # no tray offscreen: this ends the app

    def open_link(controller, text):
        shown(controller, text)
        window = controller.window  # a home that has not chosen yet shows it in the first run
        join = window.first_run.join if window.showing_first_run() else window.join
        offer = join.offer
        say("OFFER", offer.title, "|", offer.leaving)
        if not playing:
            playing.append(asyncio.ensure_future(play(controller, join)))

    controller_module.DesktopController.open_link = open_link
    sys.exit(main(sys.argv[1:]))
""")


def options(home) -> list[str]:
    return ["--home", str(home), "--port", "0", "--bind-host", "127.0.0.1", "--client"]


def app_command(home, link: str | None = None) -> list[str]:
    """The link first, as the desktop entry's `meshdesk %u` passes it."""
    return [sys.executable, "-c", USER_AT_THE_JOIN_VIEW, *([link] if link else []), *options(home)]


def start_app(home, link: str | None = None) -> NodeProcess:
    home.mkdir(exist_ok=True)
    process = subprocess.Popen(app_command(home, link), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=child_environment())
    return NodeProcess(process, home)


def finish(app: NodeProcess) -> None:
    (app.home / "done").touch()
    assert app.process.wait(30) == 0, app.describe()


def stored_mesh(home) -> str | None:
    return json.loads((home / "mesh.json").read_text())["mesh_id"]


@pytest.fixture
def meshed_home(tmp_path, node_factory):
    """A home whose node is in a mesh with one other member (who keeps running)."""
    friend = node_factory("--client")
    home = tmp_path / "meshed"
    member = node_factory("--client", "--join", friend.invite_token(), home=home)
    poll(lambda: member.node_id in friend.peer_ids(), 15, message="the friend to see the member")
    member.stop()
    return home, friend


def test_a_link_opened_in_the_app_joins_nothing_until_the_user_confirms(tmp_path, node_factory):
    inviter = node_factory("--client")
    link = inviter.printed("Invite link: ")
    app = start_app(tmp_path / "desktop", link)
    try:
        offer = app.printed("OFFER ")
        assert offer.startswith(f"Join mesh {inviter.status()['mesh']['id'][:8]}?")
        assert inviter.peer_ids() == set()  # the node is up and in its own mesh, the inviter alone
        assert app.status()["mesh"]["id"] != inviter.status()["mesh"]["id"]
        (app.home / "go").touch()
        app.printed("JOINED:")
        poll(lambda: app.node_id in inviter.peer_ids(), 15, message="the inviter to see the joiner")
        finish(app)
    finally:
        app.stop()


def test_headless_a_link_is_printed_and_only_join_joins(tmp_path, node_factory):
    inviter = node_factory("--client")
    link = inviter.printed("Invite link: ")
    home = tmp_path / "headless"
    shown = run_meshdesk(link, *options(home), "--headless", timeout=30)
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert "Nothing was joined" in shown.stdout and f"Join mesh {inviter.status()['mesh']['id'][:8]}?" in shown.stdout
    assert "meshdesk --headless --join LINK" in shown.stderr
    assert inviter.peer_ids() == set() and not (home / "runtime.json").exists()
    joiner = node_factory("--client", "--join", link, home=home)  # the explicit act
    poll(lambda: joiner.node_id in inviter.peer_ids(), 15, message="the inviter to see the joiner")


def test_a_node_in_a_mesh_keeps_it_unless_the_user_confirms_leaving_it(meshed_home, node_factory):
    home, friend = meshed_home
    mesh = friend.status()["mesh"]["id"]
    stranger = node_factory("--client")
    link = stranger.printed("Invite link: ")
    refused = run_meshdesk(*options(home), "--headless", "--join", link, timeout=30)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"this node is in mesh {mesh} with 2 members" in refused.stderr
    assert "--leave-current-mesh" in refused.stderr
    assert stranger.peer_ids() == set() and stored_mesh(home) == mesh
    app = start_app(home, link)
    try:
        offer = app.printed("OFFER ")
        assert f"| You are in mesh {mesh[:8]} with 2 members; joining {stranger.status()['mesh']['id'][:8]} leaves it." in offer
        (home / "go").touch()
        assert app.printed("UNTICKED CONFIRM ENABLED") == "False"
        assert app.printed("REFUSED").startswith(f"this node is in mesh {mesh} with 2 members")
        assert stranger.peer_ids() == set() and app.status()["mesh"]["id"] == mesh
        (home / "tick").touch()
        app.printed("JOINED:")
        poll(lambda: app.node_id in stranger.peer_ids(), 15, message="the stranger to see the joiner")
        assert app.status()["mesh"]["id"] == stranger.status()["mesh"]["id"]
        finish(app)
    finally:
        app.stop()


def test_a_link_opened_while_the_app_runs_goes_to_its_join_view(tmp_path, node_factory):
    inviter = node_factory("--client")
    link = inviter.printed("Invite link: ")
    app = start_app(tmp_path / "desktop")
    try:
        app.printed("MeshDesk node ")
        poll(lambda: (app.home / "runtime.json").exists(), 30, message="the app to be running")
        pid = json.loads((app.home / "runtime.json").read_text())["pid"]
        second = run_meshdesk(link, "--home", str(app.home), "--port", "0", "--client")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already running: the link is shown in its Join view" in second.stdout
        assert "API:" not in second.stdout  # no second node started
        assert app.printed("OFFER ").startswith(f"Join mesh {inviter.status()['mesh']['id'][:8]}?")
        assert inviter.peer_ids() == set()
        assert json.loads((app.home / "runtime.json").read_text())["pid"] == pid
        (app.home / "go").touch()
        app.printed("JOINED:")
        poll(lambda: app.node_id in inviter.peer_ids(), 15, message="the inviter to see the joiner")
        finish(app)
    finally:
        app.stop()
