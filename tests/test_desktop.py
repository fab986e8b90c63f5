"""The desktop app booted for real: qasync, a node, the window (offscreen, so no tray)."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.nodes import meshdesk_command
from tests.nodes import test_environment as child_environment

pytestmark = pytest.mark.slow

# The real `meshdesk` entry point, with the window closed by "the user" once it has shown.
CLOSE_AFTER_SHOWING = textwrap.dedent("""
    import sys
    from PySide6.QtCore import QTimer
    from meshdesk.ui import main_window

    show = main_window.MainWindow.show
    def show_then_close(window):
        show(window)
        print("window shown", flush=True)
        QTimer.singleShot(1500, window.close)
    main_window.MainWindow.show = show_then_close

    from meshdesk.app.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_desktop_app_serves_the_api_and_quits_on_sigterm(node_factory, default_model_path):
    node = node_factory("--gui", "--model", str(default_model_path))
    assert "running headless" not in "".join(node.output)
    node.wait_until_ready()
    reply = node.client().completions.create(model="gemma-3-270m-q4_k_m", prompt="Hello", max_tokens=2)
    assert reply.choices[0].text is not None
    assert node.stop() == 0


def test_without_a_tray_closing_the_window_ends_the_app_cleanly(tmp_path):
    command = meshdesk_command("--home", str(tmp_path), "--port", "0", "--bind-host", "127.0.0.1",
                               "--client")
    command[1:3] = ["-c", CLOSE_AFTER_SHOWING]  # python -c SCRIPT instead of python -m meshdesk
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env=child_environment())
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "window shown" in finished.stdout and "API: http://127.0.0.1:" in finished.stdout
    assert not (tmp_path / "runtime.json").exists()  # the runtime shut down, not just the window
