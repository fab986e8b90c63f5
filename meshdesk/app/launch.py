"""Wiring: from parsed options to a running node, headless or with its window."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from meshdesk.app.assembly import build_runtime
from meshdesk.app.drafts import choose_draft
from meshdesk.app.home import Home, configure_logging, default_home
from meshdesk.app.model_choice import ModelChoiceError, choose_model
from meshdesk.app.readiness import ReadinessPrinter
from meshdesk.app.runtime import Runtime
from meshdesk.core.invite import InviteToken, TokenError, decode_token

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


def open_home(arguments: argparse.Namespace) -> Home:
    home = Home((arguments.home or default_home()).expanduser().resolve())
    home.prepare()
    configure_logging(home, getattr(arguments, "verbose", False))
    return home


def serves_mesh_model(arguments: argparse.Namespace) -> bool:
    """A lite client, or a joiner without --model: it learns the mesh's model from gossip."""
    return arguments.client or (bool(arguments.join) and arguments.model is None)


def launch(arguments: argparse.Namespace) -> int:
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
    try:
        runtime = build_runtime(arguments, home, models, join_tokens)
    except OSError as error:  # e.g. a damaged secrets file: one line, not a traceback
        return fail(str(error))
    if not arguments.headless and not display_available():
        print("No display found; running headless.", flush=True)
        arguments.headless = True
    if arguments.headless:
        return asyncio.run(serve_headless(runtime))
    from meshdesk.app.desktop import run_desktop

    return run_desktop(runtime)


async def serve_headless(runtime: Runtime) -> int:
    runtime.node.subscribe(ReadinessPrinter(runtime.node))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signal_number, stop.set)
        except NotImplementedError:  # Windows: Ctrl+C still raises KeyboardInterrupt
            pass
    return await runtime.serve(stop)
