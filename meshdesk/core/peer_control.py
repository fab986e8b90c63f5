"""Peer control, sans-IO: the links to other members and what travels on them.

One `PeerControl` per node, in the style of aioquic's `QuicConnection`: every input carries
`now`, every input returns a list of outputs for the IO loop to carry out, and
`next_deadline()` says when to call `handle_timer` again. It owns:

- message dispatch on control links (gossip, ping, pong, removal notices);
- ping/pong round trips (the least of the last few, per link), and links gone silent
  (`core.link_watch`), whose peers die sooner than relayed heartbeats alone would tell;
- the duplicate-link rule: when two links to one peer exist, both ends keep the one dialled
  by the lower node id, so they agree without talking about it;
- whom to dial: members we hold alive but have no link to (the lower id dials), or, while
  alone, the addresses where members were last seen;
- removal notices: a removed member is told so, and its link closed a moment later;
- hole punching (`core.hole_punch`): asking a rendezvous, introducing a pair, punching;
- when to save what the node remembers of its mesh.

Gossip itself (records, liveness, removals) is `core.membership`'s; this module moves its
messages and feeds it. Links are named by small integers the IO loop hands out.

Outputs are commands (imperative: `SendMessage`, `CloseLink`, `DialAddress`, `SaveState`,
`RefreshOwnRecord`, `Punch`) and events (past tense: `PeersChanged`, `RemovedFromMesh`,
`PeerBrokeProtocol`).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshdesk.core.dial_schedule import DialAddress, MeshDials
from meshdesk.core import hole_punch
from meshdesk.core.errors import Fault, PeerProtocolError
from meshdesk.core.hole_punch import HolePunching, Punch  # noqa: F401  (Punch: an output)
from meshdesk.core.link_book import LinkBook, LinkState
from meshdesk.core.link_watch import LinkWatch
from meshdesk.core.membership import Membership

PING_INTERVAL = 1.0
SAVE_INTERVAL = 5.0
RTT_REPORT_INTERVAL = 5.0
REMOVAL_LINGER_SECONDS = 1.0  # lets a removal notice arrive before its link goes
STALE_LINK_SECONDS = 3 * PING_INTERVAL  # a link silent this long loses to a new one (a restarted peer)
MAX_MESSAGE_TYPE_SHOWN = 40

Address = tuple[str, int]


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class SendMessage:
    link: int
    message: dict


@dataclass(frozen=True)
class CloseLink:
    link: int
    reason: str


@dataclass(frozen=True)
class SaveState:
    """Persist what the node remembers: members' addresses, removals, revocations."""


@dataclass(frozen=True)
class RefreshOwnRecord:
    """Read this node's own record afresh and hand it to `update_own` (carries new RTTs)."""


@dataclass(frozen=True)
class PeersChanged:
    """Links, liveness or records changed: plans and views should look again."""


@dataclass(frozen=True)
class RemovedFromMesh:
    """This node was removed from its mesh; every link is being closed."""


@dataclass(frozen=True)
class RekeyReceived:
    """A peer passed on a rekey (`core.rekey`); the node checks it and may take it."""

    peer_id: str
    message: dict


@dataclass(frozen=True)
class PeerBrokeProtocol:
    peer_id: str
    error: PeerProtocolError


Output = (SendMessage | CloseLink | DialAddress | SaveState | RefreshOwnRecord | Punch | PeersChanged
          | RemovedFromMesh | RekeyReceived | PeerBrokeProtocol)


def as_outputs(items: list) -> list[Output]:
    """`core.hole_punch`'s (link, message) pairs as SendMessage; its Punch as they are."""
    return [SendMessage(*item) if isinstance(item, tuple) else item for item in items]


class PeerControl:
    def __init__(self, membership: Membership, now: float, own_addresses: list[Address] = ()):
        self.membership = membership
        self.node_id = membership.own.node_id
        self.dials = MeshDials(own_addresses)
        self.greeting: dict | None = None  # sent on every new link (the latest rekey)
        self._now = now  # the time of the latest input, for questions asked between inputs
        self.removed_from_mesh = False
        self._book = LinkBook()
        self._watch = LinkWatch(now)
        self._punching = HolePunching()
        self._next_ping = self._next_save = self._next_rtt_report = now

    # ------------------------------------------------------------ queries

    def set_fallback_addresses(self, addresses: list[Address]) -> None:
        """Where members were last seen: dialled while this node has no link at all."""
        self.dials.set_fallback_addresses(addresses)

    def link_to(self, peer_id: str) -> LinkState | None:
        return self._book.to(peer_id)

    def peer_of(self, link: int) -> str | None:
        state = self._book.states.get(link)
        return None if state is None else state.peer_id

    def linked_peers(self) -> list[str]:
        return sorted(self._book.by_peer)

    def next_deadline(self) -> float | None:
        """When `handle_timer` has work next; None once removed, when only an input can matter."""
        if self.removed_from_mesh:
            return None
        candidates = [self._next_ping, self._next_save, self._next_rtt_report]
        gossip = self.membership.next_deadline()
        if gossip is not None:
            candidates.append(gossip)
        candidates += [state.close_at for state in self._book.states.values() if state.close_at is not None]
        candidates += self._watch.deadlines(self._now, self._book.states.values())
        dial_at = self.dials.next_deadline(*self._dial_inputs())
        if dial_at is not None:
            candidates.append(dial_at)
        return min(candidates)

    # ------------------------------------------------------------ links up and down

    def link_up(self, now: float, link: int, peer_id: str, dialled_by_us: bool,
                address: Address | None = None, relayed: bool = False) -> list[Output]:
        """An authenticated control link to `peer_id`, whose end is at `address` (through a
        relay, if `relayed`); a duplicate loses by `_prefer`."""
        self._now = now
        if self.removed_from_mesh:
            return [CloseLink(link, "removed")]
        new = LinkState(link, peer_id, dialled_by_us, last_heard=now,
                        address=None if address is None else tuple(address), relayed=relayed)
        existing = self.link_to(peer_id)
        if existing is not None and not self._prefer(now, new, existing):
            return [CloseLink(link, "duplicate connection")]
        outputs: list[Output] = []
        if existing is not None:
            self._book.forget(existing.link)
            outputs.append(CloseLink(existing.link, "duplicate connection"))
        self._book.add(new)
        self.membership.peer_connected(now, peer_id)
        greeting = [SendMessage(link, self.greeting)] if self.greeting is not None else []
        return outputs + self._gossip(now) + greeting + [PeersChanged()]

    def _prefer(self, now: float, new: LinkState, existing: LinkState) -> bool:
        """Both ends keep the link the lower id dialled, so they agree without talking; but a
        silent link is a dead one (its peer restarted), and the peer's new link replaces it;
        and a direct link beats one through a relay, whoever dialled it."""
        if now - existing.last_heard > STALE_LINK_SECONDS:
            return True
        if new.relayed != existing.relayed:
            return existing.relayed
        we_are_lower = self.node_id < new.peer_id
        return new.dialled_by_us == we_are_lower and existing.dialled_by_us != we_are_lower

    def link_down(self, now: float, link: int) -> list[Output]:
        """The link is gone (closed by either end, or lost)."""
        self._now = now
        state = self._book.states.get(link)
        if state is None:
            return []
        self._book.forget(link)
        if self._book.by_peer.get(state.peer_id) is None:
            self.membership.peer_disconnected(now, state.peer_id)
        return [PeersChanged()]

    # ------------------------------------------------------------ messages in

    def message_received(self, now: float, link: int, message: dict) -> list[Output]:
        """A message on a live link; a peer that breaks the protocol is dropped, never us."""
        self._now = now
        state = self._book.states.get(link)
        if state is None or self.removed_from_mesh:
            return []
        state.last_heard = now
        try:
            return self._dispatch(now, state, message)
        except PeerProtocolError as error:
            self._book.forget(link)
            if state.peer_id not in self._book.by_peer:
                self.membership.peer_disconnected(now, state.peer_id)
            return [PeerBrokeProtocol(state.peer_id, error), CloseLink(link, "protocol error"),
                    PeersChanged()]

    def _dispatch(self, now: float, state: LinkState, message: dict) -> list[Output]:
        kind = message.get("type")
        if kind == "gossip":
            self.membership.receive(now, state.peer_id, message)
            return self._after_gossip(now)
        if kind == "ping":
            return [SendMessage(state.link, {"type": "pong", "t": message.get("t")})]
        if kind == "pong":
            state.measure_rtt(now, message.get("t"))
            return []
        if kind == "removed":
            return self._leave_removed()
        if kind == "rekey":
            return [RekeyReceived(state.peer_id, message)]
        if kind in hole_punch.MESSAGE_TYPES:
            alive = {record.node_id for record in self.membership.alive_records(now)} - {self.node_id}
            return as_outputs(self._punching.received(now, state, message, self._book, alive))
        raise PeerProtocolError(f"an unknown message type {str(kind)[:MAX_MESSAGE_TYPE_SHOWN]!r}",
                                Fault.UNEXPECTED)

    def _after_gossip(self, now: float) -> list[Output]:
        removed = self.membership.removed_node_ids
        if self.node_id in removed:
            return self._leave_removed()
        outputs: list[Output] = self._gossip(now)
        for peer_id in sorted(removed & set(self._book.by_peer)):
            outputs += self._tell_removed(now, self._book.states[self._book.by_peer[peer_id]])
        return outputs + [PeersChanged()]

    def _leave_removed(self) -> list[Output]:
        if self.removed_from_mesh:
            return []
        self.removed_from_mesh = True
        closes = [CloseLink(link, "removed") for link in sorted(self._book.states)]
        self._book = LinkBook()
        return closes + [RemovedFromMesh(), SaveState(), PeersChanged()]

    def _tell_removed(self, now: float, state: LinkState) -> list[Output]:
        if state.close_at is not None:
            return []
        state.close_at = now + REMOVAL_LINGER_SECONDS
        return [SendMessage(state.link, {"type": "removed"})]

    # ------------------------------------------------------------ local commands

    def update_own(self, now: float, fields: dict) -> list[Output]:
        """This node's record changed (name, capacity, models, role ...); RTTs are added here."""
        self._now = now
        if self.removed_from_mesh:
            return []
        before = self.membership.own
        self.membership.update_own(now, rtt_ms=self._book.rtt_table(), **fields)
        changed = self.membership.own != before
        return self._gossip(now) + ([PeersChanged()] if changed else [])

    def remove(self, now: float, node_id: str) -> list[Output]:
        """Removes a member mesh-wide; raises ValueError for our own id."""
        self._now = now
        self.membership.remove(now, node_id)
        outputs: list[Output] = self._gossip(now)
        state = self.link_to(node_id)
        if state is not None:
            outputs += self._tell_removed(now, state)
        return outputs + [SaveState(), PeersChanged()]

    def grant_admin(self, now: float, public_key: bytes) -> list[Output]:
        """Names a member an admin (the founder only: NotAuthorised, a ValueError, otherwise)."""
        self._now = now
        self.membership.grant_admin(now, public_key)
        return self._gossip(now) + [SaveState(), PeersChanged()]

    def broadcast(self, now: float, message: dict, except_peers: frozenset[str] = frozenset()) -> list[Output]:
        """`message` to every linked member but `except_peers`, and never to a removed one."""
        self._now = now
        skip = except_peers | self.membership.removed_node_ids
        return [SendMessage(link, message) for peer_id, link in sorted(self._book.by_peer.items())
                if peer_id not in skip]

    def revoke(self, now: float, token_id: str) -> list[Output]:
        self._now = now
        self.membership.revoke_token(now, token_id)
        return self._gossip(now) + [SaveState(), PeersChanged()]

    def leave(self, now: float) -> list[Output]:
        """We quit: every peer hears it at once and drops us without waiting for a timeout."""
        self._now = now
        if self.removed_from_mesh:
            return []
        self.membership.leave(now)
        return self._gossip(now)

    def dial_ended(self, now: float, address: Address) -> None:
        """A dial finished, however it went: the address may be dialled again after the retry wait."""
        self._now = now
        self.dials.ended(address)

    def dial_refused(self, now: float, error: PeerProtocolError) -> list[Output]:
        """A dial ended in a refusal; one that says we were removed takes us out of the mesh."""
        self._now = now
        return self._leave_removed() if error.fault is Fault.REMOVED else []

    # ------------------------------------------------------------ time

    def handle_timer(self, now: float) -> list[Output]:
        self._now = now
        if self.removed_from_mesh:
            return []
        outputs: list[Output] = []
        for peer_id in self._watch.silent_peers(now, self._book.states.values()):
            self.membership.peer_unresponsive(now, peer_id)  # direct evidence, faster than relays
        if self.membership.expire(now):
            outputs.append(PeersChanged())
        outputs += self._gossip(now) + self._close_lingering(now) + self._due_pings(now)
        outputs += self.dials.due(now, *self._dial_inputs())
        outputs += as_outputs(self._punching.asks(now, self.node_id, self.membership.alive_records(now), self._book))
        if now >= self._next_rtt_report:
            self._next_rtt_report = now + RTT_REPORT_INTERVAL
            outputs.append(RefreshOwnRecord())
        if now >= self._next_save:
            self._next_save = now + SAVE_INTERVAL
            outputs.append(SaveState())
        return outputs

    def _gossip(self, now: float) -> list[Output]:
        return [SendMessage(self._book.by_peer[peer_id], message)
                for peer_id, message in self.membership.messages_to_send(now) if peer_id in self._book.by_peer]

    def _close_lingering(self, now: float) -> list[Output]:
        due = [state for state in self._book.states.values() if state.close_at is not None and now >= state.close_at]
        for state in due:
            self._book.forget(state.link)
            self.membership.peer_disconnected(now, state.peer_id)
        return [CloseLink(state.link, "removed from the mesh") for state in due]

    def _due_pings(self, now: float) -> list[Output]:
        if now < self._next_ping:
            return []
        self._next_ping = now + PING_INTERVAL
        return [SendMessage(link, {"type": "ping", "t": now}) for link in sorted(self._book.states)]

    def _dial_inputs(self) -> tuple:
        return self.node_id, self.membership.alive_records(self._now), self._book.by_peer, self._book.relayed_peers()
