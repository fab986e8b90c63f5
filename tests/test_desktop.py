"""The desktop app: the real qasync bootstrap with a node, and the window against snapshots."""

from __future__ import annotations

import pytest

from meshdesk.ui.main_window import MainWindow

pytestmark = pytest.mark.slow


def snapshot(state: str, error: str | None = None, port: int | None = 9337) -> dict:
    return {
        "node": {"id": "abc123", "name": "alice", "home": "/tmp/x", "version": "0.1.0"},
        "models": [{"id": "gemma-3-270m-q4_k_m", "state": state, "path": "/m.gguf", "error": error}],
        "api_port": port,
    }


def test_window_shows_node_and_model_state(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show_status(snapshot("loading", port=None))
    assert "alice" in window.title.text() and "abc123" in window.title.text()
    assert "starting" in window.api_address.text()
    assert "loading" in window.models.item(0).text()

    window.show_status(snapshot("failed", error="bad file"))
    assert window.api_address.text() == "API: http://127.0.0.1:9337/v1"
    assert "failed: bad file" in window.models.item(0).text()
    assert window.models.count() == 1


def test_desktop_app_serves_the_api_and_quits_on_sigterm(node_factory, default_model_path):
    node = node_factory("--gui", "--model", str(default_model_path))
    assert "running headless" not in "".join(node.output)
    node.wait_until_ready()
    reply = node.client().completions.create(model="gemma-3-270m-q4_k_m", prompt="Hello", max_tokens=2)
    assert reply.choices[0].text is not None
    assert node.stop() == 0
