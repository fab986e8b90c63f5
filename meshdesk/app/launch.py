"""Wiring: from parsed options to a running node, headless or with its window."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from meshdesk import __version__
from meshdesk.adapters.openai_server import OpenAiServer
from meshdesk.app.home import Home, configure_logging, default_home, default_node_name, load_or_create_node_id
from meshdesk.app.model_choice import ChosenModel, ModelChoiceError, choose_model
from meshdesk.node.child_process import python_module_command
from meshdesk.node.model_host import ModelHost
from meshdesk.node.node import Node, NodeIdentity

DEFAULT_CONTEXT = 4096


def fail(message: str) -> int:
    sys.stderr.write(f"meshdesk: error: {message}\n")
    return 2


def model_host_for(model: ChosenModel, home: Home, threads: int | None) -> ModelHost:
    context = min(DEFAULT_CONTEXT, model.info.context_length or DEFAULT_CONTEXT)
    arguments = ["--model", str(model.path), "--context", str(context)]
    if threads:
        arguments += ["--threads", str(threads)]
    command = python_module_command("meshdesk.adapters.llama_host", *arguments)
    return ModelHost(model.id, model.path, command, home.logs / f"model-host-{model.id}.log")


def build_node(arguments: argparse.Namespace, home: Home, model: ChosenModel) -> Node:
    identity = NodeIdentity(
        id=load_or_create_node_id(home),
        name=arguments.name or default_node_name(),
        home=home.root,
        version=__version__,
    )
    node = Node(identity, [model_host_for(model, home, arguments.threads)])
    for alias in model.aliases:
        node.add_alias(alias, model.id)
    return node


def display_available() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def launch(arguments: argparse.Namespace) -> int:
    home = Home((arguments.home or default_home()).expanduser().resolve())
    try:
        home.prepare()
    except OSError as error:
        return fail(f"cannot use {home.root} as the home folder: {error}")
    configure_logging(home, arguments.verbose)
    try:
        model = choose_model(arguments.model, home.models)
    except ModelChoiceError as error:
        return fail(str(error))
    node = build_node(arguments, home, model)
    if not arguments.headless and not display_available():
        print("No display found; running headless.", flush=True)
        arguments.headless = True
    if arguments.headless:
        return asyncio.run(serve_headless(node, arguments.port))
    from meshdesk.app.desktop import run_desktop

    return run_desktop(node, arguments.port)


class ReadinessPrinter:
    """Tells the terminal when each model becomes ready or fails."""

    def __init__(self, node: Node):
        self.node = node
        self.last_states: dict[str, str] = {}

    def __call__(self) -> None:
        for status in self.node.model_statuses():
            if self.last_states.get(status.id) == status.state:
                continue
            self.last_states[status.id] = status.state
            if status.state == "ready":
                print(f"Model {status.id} is ready.", flush=True)
            elif status.state == "failed":
                print(f"Model {status.id} failed: {status.error}", flush=True)


async def start_api(node: Node, port: int) -> OpenAiServer:
    server = OpenAiServer(node)
    node.api_port = await server.start(port)
    print(f"MeshDesk node {node.identity.name} ({node.identity.id}), home {node.identity.home}", flush=True)
    print(f"API: http://127.0.0.1:{node.api_port}/v1", flush=True)
    return server


async def run_node_until(node: Node, server: OpenAiServer, stop: asyncio.Event) -> int:
    """Runs the node until `stop` is set (or the node ends), then shuts everything down."""
    node_task = asyncio.create_task(node.run())
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait([node_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    for task in (node_task, stop_task):
        task.cancel()
    await asyncio.gather(node_task, stop_task, return_exceptions=True)
    await server.stop()
    return 0


def port_failure(port: int, error: OSError) -> int:
    return fail(f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}; choose another --port")


async def serve_headless(node: Node, port: int) -> int:
    try:
        server = await start_api(node, port)
    except OSError as error:
        return port_failure(port, error)
    node.subscribe(ReadinessPrinter(node))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signal_number, stop.set)
        except NotImplementedError:  # Windows: Ctrl+C still raises KeyboardInterrupt
            pass
    return await run_node_until(node, server, stop)
