"""Assembling a node from its parts: identity, mesh, inventory, rpc worker, serving and tunnels."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from meshdesk import __version__
from meshdesk.adapters.gguf_metadata import ModelFileError, read_kv_bytes_per_token, read_model_info, read_tensor_infos
from meshdesk.adapters.api_token import load_or_create_token
from meshdesk.adapters.secret_store import open_secret_store
from meshdesk.app.command_line import DEFAULT_CONTEXT
from meshdesk.app.home import Home, default_node_name, save_node_name, saved_node_name
from meshdesk.app.mesh_download import build_auto_download
from meshdesk.app.mesh_setup import build_mesh, capacity_bytes, load_node_key, node_versions
from meshdesk.app.drafts import DraftChoice
from meshdesk.app.drafts import host_arguments as draft_host_arguments
from meshdesk.app.model_choice import (ChosenModel, ModelChoiceError, bundled_catalog, choose_model,
                                       find_catalog_file, model_folders)
from meshdesk.app.runtime import Runtime
from meshdesk.core.identity import node_id_for
from meshdesk.core.invite import InviteToken
from meshdesk.core.local_api_policy import ApiAccess
from meshdesk.core.model_advert import ModelAdvert, SplitOptions
from meshdesk.core.parallel import default_parallel
from meshdesk.core.rpc_expander import FilePiece
from meshdesk.core.rpc_stream import WeightTensor
from meshdesk.node.child_process import python_module_command
from meshdesk.node.model_host import ModelHost
from meshdesk.node.model_inventory import ModelInventory
from meshdesk.node.node import Node, NodeHooks, NodeIdentity
from meshdesk.node.offer import Offer
from meshdesk.node.own_state import OwnState
from meshdesk.node.layer_host import TensorDigests
from meshdesk.node.layer_host import referencer_factory as layer_referencer_factory
from meshdesk.node.layer_member import LayerStore, advertised_size, layer_space
from meshdesk.node.rpc_member import MemberSide
from meshdesk.node.rpc_tunnel import Traffic
from meshdesk.node.rpc_worker import RpcWorker
from meshdesk.node.serving import Serving

RPC_PURPOSE = "rpc"
log = logging.getLogger(__name__)


def describe_model(path: Path) -> dict:
    info = read_model_info(path)
    return {"layers": info.layer_count, "context_length": info.context_length,
            "kv_bytes_per_token": read_kv_bytes_per_token(path)}


@lru_cache(maxsize=8)
def weight_table(path: str) -> dict[str, WeightTensor]:
    return {tensor.name: WeightTensor(tensor.name, tensor.offset, tensor.nbytes)
            for tensor in read_tensor_infos(path)}


def file_reader(path: str):
    def read(offset: int, length: int) -> bytes:
        with open(path, "rb") as file:
            return os.pread(file.fileno(), length, offset)
    return read


def auto_draft(model_path: Path, models_folder: Path) -> Path | None:
    """The catalog's paired draft for the model at `model_path`, when the draft's file is in a
    models folder and is a readable GGUF; None otherwise (or for a model the catalog lacks)."""
    catalog = bundled_catalog()
    found = catalog.by_local_file(Path(model_path).name)
    draft_entry = catalog.draft_for(found[0]) if found is not None else None
    if draft_entry is None:
        return None
    path = find_catalog_file(draft_entry, model_folders(models_folder))
    if path is None:
        return None
    try:
        read_model_info(path)
    except ModelFileError as error:
        log.warning("not using the draft %s: %s", path, error)
        return None
    return path.resolve()


def draft_for(model_path: Path, models_folder: Path, choice: DraftChoice) -> Path | None:
    """`--no-draft`: none; `--draft PATH`: that file for whatever model this node hosts (the
    host refuses it, and says so in /api/status, when the vocabularies differ); else the
    catalog's pairing."""
    if choice.disabled:
        return None
    if choice.explicit is not None:
        return choice.explicit
    try:
        return auto_draft(model_path, models_folder)
    except Exception:  # a catalog problem must not keep the model from being served
        log.exception("could not look up a draft for %s", model_path)
        return None


def model_context(path: Path, asked: int | None) -> int:
    """`--context N`, else the default, but never past the context the model was trained for."""
    try:
        trained = read_model_info(path).context_length
    except (ModelFileError, OSError):
        trained = None
    context = asked or DEFAULT_CONTEXT
    return min(context, trained) if trained else context


def model_host_factory(home: Home, threads: int | None, drafts: DraftChoice = DraftChoice(),
                       context: int | None = None, traffic: Traffic | None = None,
                       parallel: int | None = None, memory: Callable[[], int] = lambda: 0):
    """Model hosts as this node's options say; a split one counts its tunnel's round trips
    (`traffic`, which counts every split this node hosts) for tokens per round trip. Without
    `--parallel`, each decodes as many answers at once as fit in `memory()` (`core.parallel`)."""
    def make(model: dict, endpoints: list[str], shares: list[float]) -> ModelHost:
        context_size = model_context(Path(model["path"]), context)
        sequences = parallel or default_parallel(memory(), model["size"], model.get("kv_bytes_per_token"),
                                                 context_size)
        arguments = ["--model", model["path"], "--context", str(context_size), "--parallel", str(sequences)]
        if threads:
            arguments += ["--threads", str(threads)]
        arguments += draft_host_arguments(draft_for(Path(model["path"]), home.models, drafts), drafts)
        for endpoint in endpoints:
            arguments += ["--rpc", endpoint]
        if shares:
            arguments += ["--tensor-split", ",".join(str(share) for share in shares)]
        command = python_module_command("meshdesk.adapters.llama.host", *arguments)
        model_id = Path(model["name"]).stem
        round_trips = (lambda: traffic.round_trips) if endpoints and traffic is not None else None
        return ModelHost(model_id, Path(model["path"]), command, home.logs / f"model-host-{model_id}.log",
                         round_trips=round_trips)
    return make


def referencer_factory(home: Path):
    """At each tunnel connection: the member's layer manifest, then the referencer (`node.layer_host`)."""
    return layer_referencer_factory(weight_table, file_reader, TensorDigests(home))


def piece_reader(inventory: ModelInventory):
    """A member reads a reference's bytes from its own copy of the file, one piece at a time."""
    def read(piece: FilePiece) -> bytes:
        return file_reader(str(inventory.path_for_digest(piece.digest)))(piece.offset, piece.length)
    return read


def tensor_tables(inventory: ModelInventory):
    """A model file's tensor table from this node's own GGUF index, by digest (None if absent)."""
    def table(digest: str) -> dict[str, WeightTensor] | None:
        model = next((model for model in inventory.models if model["digest"] == digest), None)
        if model is None:
            return None
        try:
            return weight_table(model["path"])
        except (ModelFileError, OSError) as error:
            log.warning("cannot read the tensors of %s: %s", model["path"], error)
            return None
    return table


def own_record_source(own: OwnState, offer: Offer, inventory: ModelInventory, options: SplitOptions,
                      layers: LayerStore | None = None):
    """What this node tells the mesh about itself, read afresh on every change.

    Models this node asks the mesh to serve (`own.wants`) are flagged `wanted` and carry its
    split options, so every node plans them alike; it serves the first itself. The node keeps
    `own` current: its name on rename, its wants on serve and drop, its role after each replan.
    """
    def own_record() -> dict:
        wanted = [digest for digest in map(inventory.digest_of, own.wants) if digest]
        models = tuple(with_split_options(model, options) if model.digest in wanted else model
                       for model in inventory.public_models())
        return {"name": own.name, "capacity_bytes": offer.capacity_bytes, "models": models,
                "serving": wanted[0] if wanted else None, "role": own.role, "versions": node_versions(),
                "layer_space_bytes": layer_space(layers)}
    return own_record


def with_split_options(model: ModelAdvert, options: SplitOptions) -> ModelAdvert:
    return replace(model, wanted=True, split=options.force_split, tensor_split=options.manual_split)


def split_options(arguments: argparse.Namespace) -> SplitOptions:
    manual = tuple(arguments.tensor_split) if arguments.tensor_split else None
    return SplitOptions(force_split=arguments.split or manual is not None, manual_split=manual)


def build_runtime(arguments: argparse.Namespace, home: Home, models: list[ChosenModel],
                  join_tokens: list[InviteToken]) -> Runtime:
    """Builds each part once, after the parts it needs, and hands it all of them at construction.

    The one circle in a node, that the mesh's own record tells of the name, wants and role that
    `Node` and `Serving` change later while both need the mesh, is cut by `OwnState`: it is made
    first, the record source reads it, and the node writes it. What the mesh and serving report
    back (changes, inbound data links) the node subscribes to itself when it is built.
    """
    secrets = open_secret_store(home.root)
    key = load_node_key(secrets)
    node_id = node_id_for(key.public_bytes)
    name = arguments.name or saved_node_name(home) or default_node_name()
    if arguments.name:
        save_node_name(home, arguments.name)
    offer = Offer(measured_bytes=capacity_bytes(None), client=arguments.client)
    offer.set_cap_gigabytes(arguments.max_vram)
    own = OwnState(name=name, wants=[model.path for model in models],
                   implicit=[] if arguments.model else [model.path for model in models])  # no --model: the default
    inventory = ModelInventory(home.root, [] if arguments.client else model_folders(home.models),
                               list(own.wants), describe_model)
    layers = None if arguments.client else LayerStore.in_home(home.root)
    record = own_record_source(own, offer, inventory, split_options(arguments), layers)
    mesh = build_mesh(home.root, key, node_id, name, secrets, arguments.bind_host, arguments.bind_port, record,
                      getattr(arguments, "relay", None) or (), getattr(arguments, "serve_relay", None))
    traffic = Traffic()
    worker = None if arguments.client else RpcWorker(
        python_module_command("meshdesk.adapters.llama.rpc_worker", *threads_option(arguments)),
        home.logs / "rpc-worker.log", on_ready=gpu_memory_user(offer, mesh))
    drafts = getattr(arguments, "drafts", None) or DraftChoice()
    serving = Serving(node_id, mesh, lambda: inventory.models,
                      model_host_factory(home, arguments.threads, drafts, getattr(arguments, "context", None),
                                         traffic, getattr(arguments, "parallel", None), offer.host_bytes),
                      worker, referencer_factory(home.root), traffic)
    traffic.layers = layers.progress if layers is not None else None
    rescan = model_rescanner(inventory, mesh)
    auto_download = build_auto_download(arguments, home.models, inventory, serving, offer, own, mesh, rescan)
    hooks = NodeHooks(save_name=lambda new_name: save_node_name(home, new_name),
                      wanted_digest=inventory.digest_of, resolve_model=model_resolver(home),
                      rescan_models=rescan, workers=(worker.run,) if worker is not None else (),
                      background_jobs=(rescan, auto_download.run),
                      download_status=lambda: auto_download.status,
                      data_plane_handlers={RPC_PURPOSE: rpc_member_side(node_id, serving, worker, inventory,
                                                                        traffic, mesh, layers)})
    identity = NodeIdentity(id=node_id, name=name, home=home.root, version=__version__)
    node = Node(identity, serving, mesh, own, hooks, {"backend": secrets.backend, "warning": secrets.warning},
                offer, pending_model=models[0].id if models else None,
                aliases={alias: model.id for model in models for alias in model.aliases})
    auto_download.on_change = node._notify  # lead: Node could offer a public `changed()`
    access = ApiAccess(management_token=load_or_create_token(home.root), api_key=arguments.api_key,
                       allowed_origins=frozenset(arguments.allow_origin or ()))
    return Runtime(node, mesh, join_tokens, arguments.port, access, mdns=not arguments.no_mdns)


def gpu_memory_user(offer: Offer, mesh):
    """Where llama.cpp drives a GPU, its memory is what this node offers (RAM otherwise)."""
    def use(gpu_memory_bytes: int | None) -> None:
        if gpu_memory_bytes and gpu_memory_bytes != offer.measured_bytes:
            offer.measured_bytes = gpu_memory_bytes
            mesh.refresh_own_record()
    return use


def threads_option(arguments: argparse.Namespace) -> list[str]:
    return ["--threads", str(arguments.threads)] if arguments.threads else []


def rpc_member_side(node_id: str, serving: Serving, worker: RpcWorker | None, inventory: ModelInventory,
                    traffic: Traffic, mesh, layers: LayerStore | None = None):
    """Serves a host's tunnel to this node's rpc worker, only for the host this node's own plan
    elects (a lite client has no worker to offer). Refusals show in /api/status."""
    # lead: MeshService has no public way to note a refusal yet; change this line if it gets one
    member = MemberSide(node_id, lambda: serving.plan, lambda: worker.port if worker else None,
                        tensor_tables(inventory), piece_reader(inventory), traffic,
                        note_refusal=lambda address, reason: mesh._note_refusal(address, reason),
                        layers=layers, model_size=advertised_size(mesh.alive_records))
    serving.plan_listeners.append(member.plan_changed)
    return member.serve


async def scan_models(inventory: ModelInventory, mesh) -> None:
    await inventory.scan_in_background()
    mesh.refresh_own_record()


def model_rescanner(inventory: ModelInventory, mesh):
    """Rescans the models on disk, one scan at a time; `path` joins the files scanned, so a
    model served from outside the models folders is hashed and advertised too."""
    lock = asyncio.Lock()

    async def rescan(path: Path | None = None) -> None:
        if path is not None and path not in inventory.extra_files:
            inventory.extra_files.append(path)
        async with lock:
            await scan_models(inventory, mesh)
    return rescan


def model_resolver(home: Home):
    """NAME_OR_PATH to a model file, as `--model` resolves it (blocking: run it in a thread)."""
    def resolve(choice: str) -> Path:
        try:
            return choose_model(choice, home.models).path
        except ModelChoiceError as error:
            raise ValueError(str(error)) from None
    return resolve
