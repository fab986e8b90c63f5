"""Who may drive this node's rpc worker: only the host its own plan elects, only while it stands.

Every node computes the same plans from gossip (`core.serving_plan`). An inbound "rpc" data
link is served only if this node's current plan has a split whose host is the peer and whose
members include this node (`models_driven_by`); a link that arrives a moment before this
node's plan agrees waits up to `PLAN_WAIT_SECONDS` for it. Anyone else (another member, a lite
client) is refused: the link is closed and the refusal shows in /api/status. At most
`MAX_WAITING_LINKS` links wait for the plan at a time, so waiting costs a peer's victim little. When a new plan
no longer elects the peer host for the models a tunnel was opened for, that tunnel is closed.

What the host may send on a tunnel is bounded by `core.rpc_expander` (the allow-list, and
references inside the tensors of the driven models' own GGUF index).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshdesk.core.rpc_expander import ReferenceExpander, TensorTable
from meshdesk.core.serving_plan import ServingPlan, models_driven_by
from meshdesk.node.rpc_tunnel import ReadPiece, Traffic, serve_member_side

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
                 plan_wait: float = PLAN_WAIT_SECONDS):
        self.own_id = own_id
        self.plan = plan
        self.worker_port = worker_port
        self.tensor_table = tensor_table  # digest -> this node's own GGUF index of that file
        self.read_piece = read_piece
        self.traffic = traffic
        self.note_refusal = note_refusal
        self.plan_wait = plan_wait
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
        files = await asyncio.to_thread(self._files, digests)  # a GGUF index is read on first use
        if not files:
            self._refuse(link, peer_id, "not the host of a plan that includes this node" if not digests
                         else "no local copy of the models it hosts")
            return
        tunnel = asyncio.ensure_future(serve_member_side(
            link, self.worker_port, lambda: ReferenceExpander(files), self.traffic, self.read_piece))
        session = Session(peer_id, frozenset(files), tunnel)
        self.sessions.append(session)
        try:  # a new plan cancels `tunnel` alone; cancelling this handler cancels it too
            (outcome,) = await asyncio.gather(tunnel, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.warning("the rpc tunnel from %s failed: %s", peer_id, outcome)
        finally:
            self.sessions.remove(session)
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

    def _files(self, digests: frozenset[str]) -> Mapping[str, TensorTable]:
        tables = {digest: self.tensor_table(digest) for digest in sorted(digests)}
        return {digest: table for digest, table in tables.items() if table}

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
