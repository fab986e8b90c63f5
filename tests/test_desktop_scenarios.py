"""The real desktop app (qasync, a real node and model, offscreen) driven through its tabs:
chat with history that survives a restart, and joining by QR then capping the capacity."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from meshdesk.ui.qr_images import qr_image
from tests.nodes import poll
from tests.nodes import test_environment as child_environment

pytestmark = pytest.mark.slow
GB = 1024 ** 3

# Boots the desktop as `meshdesk --gui` does, then plays the user: `driver.py SCENARIO OPTIONS`.
DRIVER = textwrap.dedent("""
    import asyncio, pathlib, sys
    import qasync
    from PySide6.QtWidgets import QApplication
    from meshdesk.app.assembly import build_runtime
    from meshdesk.app.cli import build_parser
    from meshdesk.app.desktop import Desktop
    from meshdesk.app.launch import open_home
    from meshdesk.app.model_choice import choose_model

    arguments = build_parser().parse_args(sys.argv[2:])
    home = open_home(arguments)
    models = [choose_model(choice, home.models) for choice in arguments.model or [None]]
    runtime = build_runtime(arguments, home, models, [])
    application = QApplication([])
    application.setQuitOnLastWindowClosed(False)
    desktop = Desktop(runtime, application)
    desktop.chat_service.max_tokens = 12
    window, chat = desktop.window, desktop.window.chat

    def say(*words):
        print(*words, flush=True)

    async def until(condition, timeout=90):
        # Re-checks `condition` until it holds or the deadline passes. Polled: these are widget
        # states that Qt sets from its own timers and signals, with no one event to wait on.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise SystemExit(f"timed out after {timeout} s")
            await asyncio.sleep(0.05)

    async def ask():
        say("SHOWN AT START", repr(chat.transcript.toPlainText()))
        say("FIRST RUN", window.showing_first_run())
        window.first_run.start_button.click()  # "Start a mesh"
        say("ON CHAT", window.tabs.currentWidget() is chat)
        await until(lambda: chat.send_button.isEnabled()
                    and runtime.node.model_statuses()[0].state == "ready")
        chat.input.setPlainText("Say hello to the mesh.")
        chat.send_button.click()
        await until(lambda: desktop.chat_service.reply_task is not None)
        await desktop.chat_service.reply_task
        say("SHOWN AT END", repr(chat.transcript.toPlainText()))

    async def look():
        say("SHOWN AT START", repr(chat.transcript.toPlainText()))
        say("FIRST RUN", window.showing_first_run())

    async def join():  # from the first run: "Join a friend's mesh", then its Join view
        window.first_run.join_button.click()
        join = window.first_run.join
        join.scan_file_requested.emit(str(home.root / "invite.png"))
        await until(lambda: join.token.text().startswith("meshdesk://join/"))
        join.join_button.click()  # shows the invite: the mesh, the inviter, the expiry
        await until(lambda: join.confirm_button.isEnabled(), 10)
        join.confirm_button.click()
        await until(lambda: join.result.text() == "Joined the mesh.", 30)
        say("JOINED", "then chat" if window.tabs.currentWidget() is chat else "stayed")
        window.settings.slider.setValue(10)  # 1.0 GB; sent once the slider rests
        await until(lambda: runtime.node.offer.capacity_bytes == 1024 ** 3, 10)
        await until(lambda: window.settings.advertised.text().startswith("1.0 GB"), 5)
        say("CAPPED", window.settings.advertised.text())
        await until(lambda: (home.root / "done").exists(), 60)

    async def main():
        serving = asyncio.ensure_future(desktop.serve())
        try:
            await {"ask": ask, "look": look, "join": join}[sys.argv[1]]()
        finally:
            window.close()  # no tray offscreen: this ends the app
        return await serving

    sys.exit(qasync.run(main()))
""")


def driver_command(scenario: str, home, model_path) -> list[str]:
    return [sys.executable, "-c", DRIVER, scenario, "--home", str(home), "--port", "0",
            "--bind-host", "127.0.0.1", "--model", str(model_path)]


def run_app(scenario: str, home, model_path) -> str:
    finished = subprocess.run(driver_command(scenario, home, model_path), capture_output=True,
                              text=True, timeout=180, env=child_environment())
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return finished.stdout


def shown(output: str, moment: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith(f"SHOWN AT {moment} "))
    return line.removeprefix(f"SHOWN AT {moment} ")


def test_a_chat_streams_from_the_real_model_and_is_there_after_a_restart(tmp_path, default_model_path):
    first = run_app("ask", tmp_path, default_model_path)
    assert shown(first, "START") == "''"
    assert "FIRST RUN True" in first and "ON CHAT True" in first  # a fresh home asks, then chats
    answer = shown(first, "END")
    assert "Say hello to the mesh." in answer and "gemma-3-270m-q4_k_m" in answer
    reply = answer.split("gemma-3-270m-q4_k_m", 1)[1].strip("'\\n ")
    assert reply and reply != "…", first
    # The answer's speed and its one machine (this node, named after the host by default).
    assert re.search(r"\d+\.\d tok/s · served by \S+", answer), answer
    second = run_app("look", tmp_path, default_model_path)
    assert shown(second, "START") == answer and "FIRST RUN False" in second


def test_joining_by_qr_file_then_the_slider_changes_what_the_mesh_sees(tmp_path, node_factory,
                                                                       default_model_path):
    inviter = node_factory("--client")
    desktop_home = tmp_path / "desktop"
    desktop_home.mkdir()
    assert qr_image(inviter.printed("Invite link: "), module_pixels=5).save(str(desktop_home / "invite.png"))
    app = subprocess.Popen(driver_command("join", desktop_home, default_model_path),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=child_environment())
    try:
        lines = iter(app.stdout.readline, "")
        assert any(line.startswith("JOINED then chat") for line in lines)
        capped = next(line for line in lines if line.startswith("CAPPED"))
        assert "1.0 GB of" in capped
        def desktop_capacity():
            peers = inviter.status()["peers"]
            return peers[0]["capacity_bytes"] if peers else None
        poll(lambda: desktop_capacity() == GB, 15, message="the inviter to see the new capacity")
        (desktop_home / "done").touch()
        assert app.wait(30) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
