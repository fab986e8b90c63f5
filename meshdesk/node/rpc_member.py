"""Who may drive this node's rpc worker: only the host its own plan elects, only while it stands.

Every node computes the same plans from gossip (`core.serving_plan`). An inbound "rpc" data
link is served only if this node's current plan has a split whose host is the peer and whose
members include this node (`models_driven_by`); a link that arrives a moment before this
node's plan agrees waits up to `PLAN_WAIT_SECONDS` for it. Anyone else (another member, a lite
client) is refused: the link is closed and the refusal shows in /api/status. At most
`MAX_WAITING_LINKS` links wait for the plan at a time, so waiting costs a peer's victim little. When a new plan
no longer elects the peer host for the models a tunnel was opened for, that tunnel is closed.

Before the raw stream the host sends the manifest of this member's share (`node.layer_member`):
with the model's file here, references come from it; without it, from this member's layer
cache, and the layers it lacks are kept as they arrive. A share with no room here is refused.

What the host may send on a tunnel is bounded by `core.rpc_expander` (the allow-list, and
references inside the tensors of the driven models' own GGUF index or of the verified cache).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.rpc_expander import ReferenceExpander, TensorTable
from meshdesk.core.serving_plan import ServingPlan, models_driven_by
from meshdesk.node.interfaces import LinkClosed
from meshdesk.node.layer_member import LayerStore, Negotiated, NoRoom, negotiate
from meshdesk.node.rpc_tunnel import ReadPiece, Traffic, no_kept_pieces, serve_member_side

log = logging.getLogger(__name__)

PLAN_WAIT_SECONDS = 5.0
MAX_WAITING_LINKS = 32  # links waiting for the plan at once; more are refused at once


@dataclass
class Session:
    peer_id: str
    digests: frozenset[str]
    task: asyncio.Task


class MemberSide:
    """The "rpc" data-plane handler of a node that offers its rpc worker to the mesh."""

    def __init__(self, own_id: str, plan: Callable[[], ServingPlan], worker_port: Callable[[], int | None],
                 tensor_table: Callable[[str], TensorTable | None], read_piece: ReadPiece, traffic: Traffic,
                 note_refusal: Callable[[tuple, str], None] = lambda address, reason: None,
                 plan_wait: float = PLAN_WAIT_SECONDS, layers: LayerStore | None = None,
                 model_size: Callable[[str, str], int | None] = lambda host, digest: None):
        self.own_id = own_id
        self.plan = plan
        self.worker_port = worker_port
        self.tensor_table = tensor_table  # digest -> this node's own GGUF index of that file
        self.read_piece = read_piece
        self.traffic = traffic
        self.note_refusal = note_refusal
        self.plan_wait = plan_wait
        self.layers = layers  # None: only models whose file is here
        self.model_size = model_size  # (host id, digest) -> the size that host advertises
        self.sessions: list[Session] = []
        self.refused = 0
        self.waiting = 0
        self._plan_changed = asyncio.Event()

    def driven_models(self, peer_id: str) -> frozenset[str]:
        return models_driven_by(self.plan(), self.own_id, peer_id)

    async def serve(self, identity, link) -> None:
        peer_id = identity.node_id
        if not self.driven_models(peer_id) and self.waiting >= MAX_WAITING_LINKS:
            self._refuse(link, peer_id, "too many rpc links waiting for the plan")
            return
        self.waiting += 1
        try:
            digests = await self._wait_until_driven(peer_id)
        finally:
            self.waiting -= 1
        if not digests:
            self._refuse(link, peer_id, "not the host of a plan that includes this node")
            return
        try:
            parts = await self._negotiate(link, peer_id, digests)
        except (PeerProtocolError, NoRoom, LinkClosed, TimeoutError, OSError) as error:
            self._refuse(link, peer_id, f"layer exchange: {error}")
            return
        files = parts.files
        tunnel = asyncio.ensure_future(serve_member_side(
            link, self.worker_port, lambda: ReferenceExpander(files, keep=parts.keep), self.traffic,
            self._reader(parts), parts.writer.keep if parts.writer else no_kept_pieces))
        session = Session(peer_id, frozenset(files), tunnel)
        self.sessions.append(session)
        try:  # a new plan cancels `tunnel` alone; cancelling this handler cancels it too
            (outcome,) = await asyncio.gather(tunnel, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.warning("the rpc tunnel from %s failed: %s", peer_id, outcome)
        finally:
            self.sessions.remove(session)
            if parts.writer is not None:
                parts.writer.close()
            link.close("rpc tunnel ended")

    async def _wait_until_driven(self, peer_id: str) -> frozenset[str]:
        deadline = asyncio.get_running_loop().time() + self.plan_wait
        while not (digests := self.driven_models(peer_id)):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._plan_changed.clear()
            try:  # not wait_for: on 3.11 it can swallow a cancellation
                async with asyncio.timeout(remaining):
                    await self._plan_changed.wait()
            except TimeoutError:
                pass
        return digests

    async def _negotiate(self, link, peer_id: str, digests: frozenset[str]) -> Negotiated:
        if self.layers is None:  # no layer cache: only models whose file is here
            local = [digest for digest in digests if await asyncio.to_thread(self.tensor_table, digest)]
            if not local:
                raise NoRoom("no local copy of the models it hosts")
            digests = frozenset(local)
        return await negotiate(link, digests, lambda digest: self.model_size(peer_id, digest),
                               self.tensor_table, self.layers, self.model_name)

    def model_name(self, digest: str) -> str:
        return self.plan().model_ids.get(digest, digest[:12])

    def _reader(self, parts: Negotiated) -> ReadPiece:
        if parts.read_cache is None:
            return self.read_piece
        read = parts.read_cache
        return lambda piece: read(piece.offset, piece.length)

    def _refuse(self, link, peer_id: str, reason: str) -> None:
        self.refused += 1
        log.warning("refused an rpc tunnel from %s: %s", peer_id, reason)
        self.note_refusal(link.remote_address, f"rpc tunnel from {peer_id[:16]}: {reason}")
        link.close(reason)

    def plan_changed(self) -> None:
        """Wakes links waiting for the plan, and closes tunnels whose host the plan no longer
        elects for the models they were opened for."""
        self._plan_changed.set()
        for session in list(self.sessions):
            if not session.digests <= self.driven_models(session.peer_id):
                log.info("closing the rpc tunnel from %s: the plan no longer elects it host here", session.peer_id)
                session.task.cancel()
