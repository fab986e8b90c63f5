"""Wiring: from parsed options to a running node, headless or with its window."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

from meshdesk.app.assembly import build_runtime
from meshdesk.app.drafts import choose_draft
from meshdesk.app.home import Home, configure_logging, default_home
from meshdesk.app.mesh_download import DownloadPrinter
from meshdesk.app.model_choice import ModelChoiceError, choose_model
from meshdesk.app.readiness import ReadinessPrinter
from meshdesk.app.runtime import RUNTIME_FILE, Runtime
from meshdesk.core.invite import InviteToken, TokenError, decode_token
from meshdesk.core.qt_libraries import PlatformFailure, headless_hint
from meshdesk.node.child_process import python_module_command
from meshdesk.node.node import MeshSwitchRefused

def fail(message: str) -> int:
    sys.stderr.write(f"meshdesk: error: {message}\n")
    return 2


def decode_join_tokens(texts: list[str]) -> list[InviteToken]:
    tokens = []
    for text in texts:
        try:
            tokens.append(decode_token(text))
        except TokenError as error:
            raise ModelChoiceError(str(error)) from None
    return tokens


def display_available() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def qt_platform_failure() -> PlatformFailure | None:
    """Why Qt's platform plugin cannot start here, found in a child process (a plugin that fails
    to load aborts its process); None when it starts. Linux only: there the plugins need system
    libraries a fresh install may lack, while macOS's and Windows's come with the OS.
    Qt's own headless platforms need no probe."""
    from meshdesk.adapters import qt_probe

    if not sys.platform.startswith("linux") or qt_probe.chosen_platform() in ("offscreen", "minimal"):
        return None
    return qt_probe.probe(python_module_command(qt_probe.__name__))


def open_home(arguments: argparse.Namespace) -> Home:
    home = Home((arguments.home or default_home()).expanduser().resolve())
    home.prepare()
    configure_logging(home, getattr(arguments, "verbose", False))
    return home


def serves_mesh_model(arguments: argparse.Namespace) -> bool:
    """A lite client, or a joiner without --model: it learns the mesh's model from gossip."""
    return arguments.client or (bool(arguments.join) and arguments.model is None)


def launch(arguments: argparse.Namespace) -> int:
    dump_stacks_on_request()
    if getattr(arguments, "unregister_links", False):
        from meshdesk.app.link_handlers import unregister_windows_links

        return unregister_windows_links()
    if getattr(arguments, "smoke_test", None) is not None:
        from meshdesk.app.smoke_test import run_smoke_test

        return run_smoke_test(arguments.smoke_test)
    try:
        arguments.drafts = choose_draft(arguments)
    except ModelChoiceError as error:
        return fail(str(error))
    try:
        home = open_home(arguments)
    except OSError as error:
        return fail(f"cannot use {arguments.home or default_home()} as the home folder: {error}")
    try:
        join_tokens = decode_join_tokens(arguments.join or [])
        models = [] if serves_mesh_model(arguments) else [
            choose_model(choice, home.models) for choice in arguments.model or [None]]
    except ModelChoiceError as error:
        return fail(str(error))
    if not arguments.headless and not display_available():
        print("No display found; running headless.", flush=True)
        arguments.headless = True
    if not arguments.headless and (failure := qt_platform_failure()) is not None:
        print(headless_hint(failure), flush=True)
        arguments.headless = True
    link = getattr(arguments, "open_link", None)
    if link is not None and not arguments.headless:
        if (handed := hand_link_over(home, link)) is not None:
            return handed
    try:
        runtime = build_runtime(arguments, home, models, join_tokens)
    except OSError as error:  # e.g. a damaged secrets file: one line, not a traceback
        return fail(str(error))
    if link is not None and arguments.headless:
        return describe_link(runtime.node, link)
    if (refused := refused_switch(runtime.node, join_tokens, arguments.leave_current_mesh)) is not None:
        return fail(refused)
    if arguments.headless:
        return asyncio.run(serve_headless(runtime, getattr(arguments, "exit_with_stdin", False)))
    if sys.platform == "win32":
        from meshdesk.app.link_handlers import register_windows_links

        register_windows_links()
    from meshdesk.app.desktop import run_desktop

    return run_desktop(runtime, link)


# --- invite links: shown, never joined, until the user says so ------------------------------

def refused_switch(node, join_tokens: list[InviteToken], leave_current: bool) -> str | None:
    """Why `--join` may not start: it would leave a mesh with members, without --leave-current-mesh."""
    for token in join_tokens:
        if not leave_current and (left := node.mesh_left_by(token)) is not None:
            return str(MeshSwitchRefused(*left, token.mesh_id))
    return None


def describe_link(node, link: str) -> int:
    """Headless, a bare link is printed, not joined: `--join LINK` is the user's consent."""
    from meshdesk.ui.join_offer import join_offer

    try:
        token = decode_token(link)
    except TokenError as error:
        return fail(str(error))
    leaving = node.mesh_left_by(token)
    offer = join_offer(link, token, time.time(), None, leaving, node.invite_problem(token))
    print("This is a MeshDesk invite link. Nothing was joined.", flush=True)
    for line in offer.lines():
        print(f"  {line}", flush=True)
    consent = " --leave-current-mesh" if leaving else ""
    return fail(f"a link alone never joins a mesh; to join it, run: meshdesk --headless --join LINK{consent}")


def hand_link_over(home: Home, link: str) -> int | None:
    """With MeshDesk's window already open for this home, the link goes there (its Join view);
    an exit code then, None when no other MeshDesk runs here."""
    from meshdesk.app.desktop import hand_link_to_running_desktop

    if hand_link_to_running_desktop(home.root, link):
        print("MeshDesk is already running: the link is shown in its Join view.", flush=True)
        return 0
    if node_running_here(home):
        return fail(f"MeshDesk already runs for {home.root} without a window; a link is not joined "
                    "from here: stop it, or join with `meshdesk --headless --join LINK` in its place")
    return None


async def serve_headless(runtime: Runtime, exit_with_stdin: bool = False) -> int:
    runtime.node.subscribe(ReadinessPrinter(runtime.node))
    runtime.node.subscribe(DownloadPrinter(runtime.node.hooks.download_status))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signal_number, stop.set)
        except NotImplementedError:  # Windows: Ctrl+C still raises KeyboardInterrupt
            pass
    if exit_with_stdin:
        stop_when_stdin_closes(loop, stop)
    return await runtime.serve(stop)


def stop_when_stdin_closes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """`--exit-with-stdin` (a lite client of `meshdesk run`): the parent holds our stdin open, so
    end of file means it is gone, however it went (even SIGKILL); the node then stops cleanly."""
    import threading

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError, AttributeError):  # no stdin at all: stop as well
            pass
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the node had stopped already
            pass

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def node_running_here(home: Home) -> bool:
    """Whether a node (headless, or a desktop without a link inbox) runs for this home: its
    runtime file names a live process."""
    try:
        pid = int(json.loads((home.root / RUNTIME_FILE).read_text())["pid"])
        if sys.platform != "win32":  # there, os.kill would end the process
            os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return pid != os.getpid()


def dump_stacks_on_request() -> None:
    """`kill -USR1 PID` prints every thread's stack to stderr: how a stuck node is diagnosed."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
