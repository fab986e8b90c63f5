"""A MeshDesk node: its identity, the models it serves, and the snapshot views observe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from meshdesk.core.invite import InviteToken, decode_token
from meshdesk.core.openai_api import GenerationRequest
from meshdesk.core.states import ModelState
from meshdesk.core.status import NodeInfo, OfferStatus, SecretsNote, StatusSnapshot, TrafficStatus
from meshdesk.node.api_tunnel import API_PURPOSE, serve_remote_request
from meshdesk.node.interfaces import ModelStatus, ModelUnavailable
from meshdesk.node.layer_member import layers_status
from meshdesk.node.mesh import JoinRefused, MeshService
from meshdesk.node.offer import Offer
from meshdesk.node.own_state import OwnState, settle_wants
from meshdesk.node.resume import Changes, resumed
from meshdesk.node.serving import Serving

log = logging.getLogger(__name__)

MAX_NAME = 64


@dataclass(frozen=True)
class NodeIdentity:
    id: str
    name: str
    home: Path
    version: str


def existing_file(model: str) -> Path:
    path = Path(model).expanduser()
    if not path.is_file():
        raise ValueError(f"no model file {model}")
    return path.resolve()


async def no_rescan(path: Path | None = None) -> None:
    return None


DataPlaneHandler = Callable[..., Awaitable[None]]  # (peer identity, link), as the mesh calls it


@dataclass(frozen=True)
class NodeHooks:
    """What the app gives a node to reach beyond the node layer: files, the models on disk and
    the children it runs."""

    save_name: Callable[[str], None] = lambda name: None             # keeps a new name in the home
    wanted_digest: Callable[[Path], str | None] = lambda path: None  # None: not a usable model
    # NAME_OR_PATH to a model file as `--model` resolves it (blocking; raises ValueError)
    resolve_model: Callable[[str], Path] = existing_file
    # a rescan of the models on disk that also takes in `path`
    rescan_models: Callable[[Path | None], Awaitable[None]] = no_rescan
    workers: tuple[Callable[[], Awaitable[None]], ...] = ()          # run for the node's life
    background_jobs: tuple[Callable[[], Awaitable[None]], ...] = ()  # run once at start
    # inbound data-plane links by purpose, besides the API requests the node answers itself
    data_plane_handlers: Mapping[str, DataPlaneHandler] = field(default_factory=dict)
    download_status: Callable[[], object] = lambda: None  # the automatic download's DownloadStatus


class MeshSwitchRefused(ValueError):
    """A join that would leave a mesh with other members, asked without consent to leave it."""

    def __init__(self, current: str, members: int, joining: str):
        super().__init__(f"this node is in mesh {current} with {members} members; joining "
                         f"{joining} leaves it: confirm leaving it (--leave-current-mesh) to switch")
        self.current, self.members, self.joining = current, members, joining


class Node:
    """Owns the mesh and what this node serves; the API and the UI observe it."""

    def __init__(self, identity: NodeIdentity, serving: Serving, mesh: MeshService, own_state: OwnState,
                 hooks: NodeHooks = NodeHooks(), secrets_note: dict | None = None,
                 offer: Offer | None = None, pending_model: str | None = None,
                 aliases: Mapping[str, str] | None = None):
        self.identity = identity
        self.offer = offer or Offer(measured_bytes=0, client=True)
        self.mesh = mesh
        self.serving = serving
        self.own_state = own_state  # read by the own gossip record: this node keeps it current
        self.hooks = hooks
        self.secrets_note = secrets_note or {}
        self.pending_model = pending_model  # ours, until the mesh has planned it
        self.aliases: dict[str, str] = dict(aliases or {})
        self.api_port: int | None = None
        self.listeners: list[Callable[[], None]] = []
        self._note_role()
        # The node subscribes itself to the parts it is built from: they exist before it, and
        # what they report is the node's to act on. lead: should MeshService take `on_change`
        # and its data-plane handlers another way (e.g. a subscribe call), change these lines only.
        mesh.on_change = self._mesh_changed
        mesh.on_refusal = self._notify  # views show refusals; they never change a plan
        mesh.data_plane_handlers.update({**hooks.data_plane_handlers, API_PURPOSE: self._answer_remote_request})
        serving.on_change = self._serving_changed

    @property
    def wants(self) -> list[Path]:
        """The model files this node asks the mesh to serve, the one it serves itself first."""
        return self.own_state.wants

    def _mesh_changed(self) -> None:
        if self.pending_model in settle_wants(self.own_state, self.mesh, self.hooks.wanted_digest):
            self.pending_model = None  # dropped by the mesh
        self.serving.replan()
        self._note_role()
        self._notify()

    def _serving_changed(self) -> None:
        self._note_role()
        self._notify()

    def _note_role(self) -> None:
        """The role follows the plans; the own record reads it the next time the mesh asks."""
        self.own_state.role = self.serving.role(self.offer.client)

    async def _answer_remote_request(self, identity, link) -> None:
        """A member forwards an API request for a model this node hosts."""
        await serve_remote_request(link, lambda request: self.generate(request, local_only=True))

    def add_alias(self, alias: str, model_id: str) -> None:
        self.aliases[alias] = model_id

    def model_statuses(self) -> list[ModelStatus]:
        statuses = self.serving.model_statuses()
        if self.pending_model and all(status.id != self.pending_model for status in statuses):
            statuses.append(ModelStatus(self.pending_model, "", ModelState.LOADING))
        return statuses

    def model_ids(self) -> list[str]:
        return [status.id for status in self.model_statuses()]

    async def generate(self, request: GenerationRequest, local_only: bool = False) -> AsyncIterator[dict]:
        """The answer's events. A request from a client (not `local_only`, forwarded by the
        node it came in through) survives losing its host: `node.resume` carries it on."""
        name = self.aliases.get(request.model, request.model)
        if name == self.pending_model and name not in self.serving.model_ids():
            raise ModelUnavailable(f"model {name} is starting; try again shortly")
        request = replace(request, model=name)
        if local_only:
            async for event in self.serving.generate(request, local_only):
                yield event
            return
        changes = Changes()
        self.listeners.append(changes.notify)
        try:
            attempt = lambda each, avoid: self.serving.generate(each, avoid=avoid)  # noqa: E731
            async for event in resumed(request, attempt, changes):
                yield event
        finally:
            self.listeners.remove(changes.notify)

    def status(self) -> StatusSnapshot:
        """What this node is and does now, for `/api/status` (`to_wire()`) and the views."""
        identity, offer, traffic, mesh = self.identity, self.offer, self.serving.traffic, self.mesh.status()
        return StatusSnapshot(
            node=NodeInfo(identity.id, identity.name, str(identity.home), identity.version,
                          self.serving.role(offer.client), self.mesh.observed_wire(), self.mesh.relays_wire()),
            models=tuple(self.model_statuses()),
            api_port=self.api_port,
            plans=tuple(self.serving.plans_status()),
            traffic=TrafficStatus(traffic.weights_sent_bytes, traffic.weights_referenced_bytes,
                                  traffic.activations_bytes, traffic.round_trips),
            secrets=SecretsNote.from_wire(self.secrets_note),
            offer=OfferStatus(offer.measured_bytes, offer.cap_bytes, offer.donating, offer.capacity_bytes),
            wants=tuple(path.stem for path in self.wants),
            mesh=mesh.mesh, peers=mesh.peers, refusals=mesh.refusals,
            download=self.hooks.download_status(),
            layers=layers_status(traffic.layers),
            layers_sent=self.serving.layers_sent(),
        )

    def mint_invite(self, expires_in: int) -> dict:
        token = self._mesh().mint_invite(expires_in)
        return {"token": token.encode(), "link": token.link(), "expires_at": token.expires_at,
                "token_id": token.token_id}

    def revoke(self, token_text: str) -> None:
        """Raises ValueError (TokenError is one) with a reason for the user."""
        self._mesh().revoke(decode_token(token_text))

    def remove(self, node_id: str) -> None:
        self._mesh().remove(node_id)

    def make_admin(self, node_id: str) -> None:
        """Names a member an admin of the mesh (the founder only); ValueError says why not."""
        self._mesh().make_admin(node_id)

    async def serve(self, model: str) -> str:
        """Asks the mesh to serve a model file, this node first; returns the model's id.

        `model` is a path or a name as `--model` takes it. Raises ValueError with the reason
        when it is not a model file this node can use.
        """
        path = await asyncio.to_thread(self.hooks.resolve_model, model)
        if self.hooks.wanted_digest(path) is None:  # new on disk, or outside the models folders
            await self.hooks.rescan_models(path)
        if self.hooks.wanted_digest(path) is None:
            raise ValueError(f"{path} is not a usable model file (see the log for why)")
        self.own_state.wants = [path] + [wanted for wanted in self.wants if wanted != path]
        if model != path.stem and Path(model).name == model and not model.endswith(".gguf"):
            self.add_alias(model, path.stem)  # so `drop` takes the name it was served by
        self.own_state.claimed.add(path)
        self.mesh.refresh_own_record()
        self.mesh.want_model(self.hooks.wanted_digest(path))  # a fresh want, even over a drop
        self._mesh_changed()
        return path.stem

    def drop(self, model: str) -> None:
        """Drops `model` for the whole mesh (any member may): every node stops serving it, and it
        stays dropped until someone serves it again (or starts a node with `--model` for it)."""
        name = self.aliases.get(model, model)
        digests = [entry.digest for entry in self.mesh.mesh_wants() or () if entry.wanted
                   and name in (entry.advert.model_id, entry.advert.name)]
        kept = [path for path in self.wants if path.stem != name]
        if not digests and len(kept) == len(self.wants):
            served = dict.fromkeys([path.stem for path in self.wants]
                                   + [entry.advert.model_id for entry in self.mesh.mesh_wants() or () if entry.wanted])
            raise ValueError(f"the mesh does not serve {model!r} (it serves: {', '.join(served) or 'nothing'})")
        self.own_state.wants = kept
        if self.pending_model == name:
            self.pending_model = None
        self.mesh.refresh_own_record()
        for digest in digests:
            self.mesh.drop_model(digest)
        self._mesh_changed()

    def rename(self, name: str) -> None:
        """Renames this node: kept in its home, told to the mesh at once."""
        name = name.strip() if isinstance(name, str) else ""
        if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
            raise ValueError(f"a node name is 1 to {MAX_NAME} printable characters")
        self.hooks.save_name(name)
        self.identity = replace(self.identity, name=name)
        self.own_state.name = name
        self.mesh.credentials = replace(self.mesh.credentials, name=name)
        self.mesh.refresh_own_record()
        self._notify()

    def set_capacity_cap(self, gigabytes: float | None) -> None:
        """Caps what this node offers (the desktop slider, `--max-vram`); the mesh re-plans."""
        self.offer.set_cap_gigabytes(gigabytes)
        self._offer_changed()

    def set_donating(self, donating: bool) -> None:
        """Starts or stops offering capacity without leaving the mesh (the tray toggle)."""
        self.offer.donating = donating
        self._offer_changed()

    def _offer_changed(self) -> None:
        self.mesh.refresh_own_record()

    def mesh_left_by(self, token: InviteToken) -> tuple[str, int] | None:
        """(id, members) of the mesh this node would leave by joining `token`'s, when that mesh
        holds other members; None when joining loses nothing (no mesh yet, the same mesh, this
        node alone in its own, or removed from it)."""
        current = self.mesh.mesh_id
        if current is None or current == token.mesh_id or self.mesh.removed_from_mesh:
            return None
        alive = self.mesh.status().mesh
        members = max(len(set(self.mesh.memory.members) | {self.identity.id}),
                      alive.members if alive is not None else 1)
        return (current, members) if members > 1 else None

    def invite_problem(self, token: InviteToken) -> str | None:
        """Why this node would refuse `token` without asking anyone (forged, expired), or None."""
        try:
            self.mesh.check_invite_locally(token)
        except JoinRefused as refusal:
            return str(refusal)
        return None

    async def join(self, token_text: str, leave_current: bool = False) -> None:
        """Joins a mesh from a token or link; raises ValueError with the reason it cannot.

        Never leaves a mesh with other members unless `leave_current` says so
        (MeshSwitchRefused otherwise): a link or a pasted token alone is no such consent.
        """
        token = decode_token(token_text)
        if (left := self.mesh_left_by(token)) is not None and not leave_current:
            raise MeshSwitchRefused(*left, token.mesh_id)
        try:
            joined = await self.mesh.join(token)
        except JoinRefused as refusal:
            raise ValueError(f"cannot join: {refusal}") from None
        if not joined:
            raise ValueError("cannot reach the inviting node; check the address and try again")
        self._notify()

    def _mesh(self):
        if self.mesh.mesh_id is None:
            raise ValueError("this node is not in a mesh yet")
        return self.mesh

    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener` is called (on the event loop) whenever the snapshot may have changed."""
        self.listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    async def run(self) -> None:
        """Runs until cancelled, even after every model host has given up (e.g. failed to load):
        the node keeps serving its status and answering that the model failed."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.mesh.run(), name="mesh")
                tasks.create_task(self.serving.run(), name="serving")
                for work in self.hooks.workers + self.hooks.background_jobs:
                    tasks.create_task(work())
                tasks.create_task(asyncio.Event().wait(), name="until cancelled")
        finally:
            await self.serving.stop()
