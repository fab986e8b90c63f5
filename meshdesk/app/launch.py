"""Wiring: from parsed options to a running node, headless or with its window."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from meshdesk import __version__
from meshdesk.adapters.secret_store import open_secret_store
from meshdesk.app.home import Home, configure_logging, default_home, default_node_name
from meshdesk.app.mesh_setup import build_mesh, capacity_bytes, load_node_key, node_versions
from meshdesk.app.model_choice import ChosenModel, ModelChoiceError, choose_model, model_folders
from meshdesk.app.runtime import Runtime
from meshdesk.core.identity import node_id_for
from meshdesk.core.invite import InviteToken, TokenError, decode_token
from meshdesk.node.child_process import python_module_command
from meshdesk.node.model_host import ModelHost
from meshdesk.node.model_inventory import ModelInventory
from meshdesk.node.node import Node, NodeIdentity
from meshdesk.node.offer import Offer

DEFAULT_CONTEXT = 4096


def fail(message: str) -> int:
    sys.stderr.write(f"meshdesk: error: {message}\n")
    return 2


def model_host_for(model: ChosenModel, home: Home, threads: int | None) -> ModelHost:
    context = min(DEFAULT_CONTEXT, model.info.context_length or DEFAULT_CONTEXT)
    arguments = ["--model", str(model.path), "--context", str(context)]
    if threads:
        arguments += ["--threads", str(threads)]
    command = python_module_command("meshdesk.adapters.llama.host", *arguments)
    return ModelHost(model.id, model.path, command, home.logs / f"model-host-{model.id}.log")


def own_record_source(name: str, offer: Offer, inventory: ModelInventory, hosts: list[ModelHost]):
    """What this node tells the mesh about itself, read afresh on every change."""
    def own_record() -> dict:
        serving = next((host.model_id for host in hosts), None)
        role = "client" if offer.client else ("host" if serving else "standby")
        return {"name": name, "capacity_bytes": offer.capacity_bytes, "models": tuple(inventory.models),
                "serving": serving, "role": role,
                "versions": node_versions()}
    return own_record


def build_runtime(arguments: argparse.Namespace, home: Home, model: ChosenModel | None,
                  join_tokens: list[InviteToken]) -> Runtime:
    secrets = open_secret_store(home.root)
    key = load_node_key(secrets)
    node_id = node_id_for(key.public_bytes)
    name = arguments.name or default_node_name()
    hosts = [] if model is None else [model_host_for(model, home, arguments.threads)]
    inventory = ModelInventory(home.root, model_folders(home.models))
    offer = Offer(measured_bytes=capacity_bytes(None), client=arguments.client)
    offer.set_cap_gigabytes(arguments.max_vram)
    record = own_record_source(name, offer, inventory, hosts)
    mesh = build_mesh(home.root, key, node_id, name, secrets, arguments.bind_host,
                      arguments.bind_port, record)
    identity = NodeIdentity(id=node_id, name=name, home=home.root, version=__version__)
    secrets_note = {"backend": secrets.backend, "warning": secrets.warning}
    node = Node(identity, hosts, mesh=mesh, secrets_note=secrets_note, offer=offer)
    for alias in model.aliases if model is not None else ():
        node.add_alias(alias, model.id)
    node.background_jobs.append(lambda: scan_models(inventory, mesh))
    return Runtime(node, mesh, join_tokens, arguments.port)


async def scan_models(inventory: ModelInventory, mesh) -> None:
    await inventory.scan_in_background()
    mesh.refresh_own_record()


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


def launch(arguments: argparse.Namespace) -> int:
    try:
        home = open_home(arguments)
    except OSError as error:
        return fail(f"cannot use {arguments.home or default_home()} as the home folder: {error}")
    try:
        join_tokens = decode_join_tokens(arguments.join or [])
        model = None if arguments.client else choose_model(arguments.model, home.models)
    except ModelChoiceError as error:
        return fail(str(error))
    try:
        runtime = build_runtime(arguments, home, model, join_tokens)
    except OSError as error:  # e.g. a damaged secrets file: one line, not a traceback
        return fail(str(error))
    if not arguments.headless and not display_available():
        print("No display found; running headless.", flush=True)
        arguments.headless = True
    if arguments.headless:
        return asyncio.run(serve_headless(runtime))
    from meshdesk.app.desktop import run_desktop

    return run_desktop(runtime)


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
