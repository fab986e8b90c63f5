"""Gossip membership: who is in the mesh, what each node offers, and who is still alive.

Sans-IO: one `Membership` object per node. Events go in (`update_own`, `receive`,
`peer_connected`, ...), each with `now` (monotonic seconds); gossip messages come out of
`messages_to_send(now)`; `next_deadline()` says when to call again; `expire(now)` reports deaths.

How it works (Scuttlebutt-style anti-entropy with a SWIM-style heartbeat table):

- Each node owns one `NodeRecord` and bumps its `generation` on every change; the higher
  generation wins everywhere. Only the owner changes its record: when a peer shows us a rival
  record for our own id (a restarted process, or a copied key), we bump ours above it.
  A node should start from a wall-clock-based generation (e.g. milliseconds since the epoch) so
  that a restart wins at once; starting from 0 also works, through the rival rule, a round later.
- Each node counts its own heartbeat up once per `heartbeat_interval` and every message carries
  the heartbeats of all nodes the sender holds as not dead. A node is "heard" when its heartbeat
  or its generation goes up, whoever relays it, so liveness spreads to nodes with no direct
  connection, and a killed node stops counting and is declared dead everywhere.
- Every message also carries a digest (`generations`) of the records the sender holds, so a
  peer sends only records newer than what we have; a lost message is repaired on the next round.
- Removed node ids and revoked invite token ids are grow-only sets, merged by union.

Wire formats: `core.gossip_message` (messages), `core.node_record` (records) and
`core.model_advert` (the models in a record). Anything malformed raises `MembershipError`
(one line, a `core.errors.PeerProtocolError`) and changes nothing.
"""

from __future__ import annotations

from dataclasses import replace

from meshdesk.core.gossip_message import MAX_SET_SIZE, MAX_TOKEN_ID_LENGTH, GossipMessage
from meshdesk.core.gossip_values import MAX_COUNTER, MembershipError, check, read_node_id, read_text
from meshdesk.core.gossip_schedule import GossipSchedule
from meshdesk.core.heartbeats import HeartbeatTable
from meshdesk.core.node_record import MAX_RECORDS, RECORD_FIELDS, NodeRecord
from meshdesk.core.states import LIVENESS_STATES, Liveness

MEMBERS = (Liveness.ALIVE, Liveness.SUSPECT)  # still counted in the mesh
SHAREABLE = (*MEMBERS, Liveness.LEFT)          # records worth gossiping on
GONE = (Liveness.DEAD, Liveness.LEFT, Liveness.REMOVED)  # forgotten after long silence

# node.mesh imports the record and the error from here, with Membership.
__all__ = ["LIVENESS_STATES", "Membership", "MembershipError", "NodeRecord"]


def _worth_sending(record: NodeRecord, peer_has: dict[str, int]) -> bool:
    """Newer than the peer's copy; a farewell only to peers that know the node at all."""
    if record.leaving and record.node_id not in peer_has:
        return False
    return record.generation > peer_has.get(record.node_id, -1)


class Membership:
    """The gossip state of one node. See the module docstring for the protocol."""

    def __init__(self, own: NodeRecord, *, suspect_after: float = 3.0, dead_after: float = 6.0,
                 heartbeat_interval: float = 1.0):
        if not (0 < heartbeat_interval and 0 < suspect_after < dead_after):
            raise ValueError("need 0 < heartbeat_interval and 0 < suspect_after < dead_after")
        self._own = own
        self._records: dict[str, NodeRecord] = {}  # other nodes only
        self._heartbeats = HeartbeatTable(suspect_after, dead_after)
        self._removed: set[str] = set()
        self._revoked: set[str] = set()
        self._connected: set[str] = set()
        self._known_by_peer: dict[str, dict[str, int]] = {}  # peer -> node id -> generation it has
        self._schedule = GossipSchedule(heartbeat_interval)
        self.own_id_conflicts = 0  # rival records for our id seen; a steady rise means a copied key

    # ------------------------------------------------------------ local events

    def update_own(self, now: float, **changes: object) -> None:
        """Changes our record (not its id, generation or leaving flag) and gossips it at once."""
        forbidden = sorted(set(changes) & {"node_id", "generation", "leaving"})
        unknown = sorted(set(changes) - RECORD_FIELDS)
        if forbidden or unknown:
            raise ValueError(f"update_own cannot change {', '.join(forbidden + unknown)}")
        candidate = replace(self._own, **changes)
        if candidate == self._own:
            return
        self._replace_own(now, replace(candidate, generation=self._own.generation + 1))

    def leave(self, now: float) -> None:
        """We quit normally: peers drop us as soon as this record reaches them."""
        self._replace_own(now, replace(self._own, leaving=True, generation=self._own.generation + 1))

    def remove(self, now: float, node_id: str) -> None:
        """Removes a node from the whole mesh, for good."""
        node_id = read_node_id(node_id)
        if node_id == self._own.node_id:
            raise ValueError("a node cannot remove itself; use leave()")
        check(len(self._removed | {node_id}) <= MAX_SET_SIZE, "too many removed nodes")
        self._schedule.observe(now)
        self._removed.add(node_id)
        self._make_due(now, self._connected)

    def revoke_token(self, now: float, token_id: str) -> None:
        token_id = read_text(token_id, "token id", MAX_TOKEN_ID_LENGTH, empty_ok=False)
        check(len(self._revoked | {token_id}) <= MAX_SET_SIZE, "too many revoked tokens")
        self._schedule.observe(now)
        self._revoked.add(token_id)
        self._make_due(now, self._connected)

    def _replace_own(self, now: float, record: NodeRecord) -> None:
        self._schedule.observe(now)
        self._own = record
        self._make_due(now, self._connected)

    # ------------------------------------------------------------ connection events

    def peer_connected(self, now: float, peer_id: str) -> None:
        """An authenticated connection to `peer_id` is up: we tell it everything at once."""
        peer_id = self._peer_id(peer_id)
        self._schedule.observe(now)
        self._connected.add(peer_id)
        self._known_by_peer[peer_id] = {}
        self._make_due(now, {peer_id})

    def peer_disconnected(self, now: float, peer_id: str) -> None:
        """The connection is gone; that alone says nothing about the peer being alive."""
        peer_id = self._peer_id(peer_id)
        self._schedule.observe(now)
        self._connected.discard(peer_id)
        self._schedule.due_peers.discard(peer_id)
        self._known_by_peer.pop(peer_id, None)

    def _peer_id(self, peer_id: object) -> str:
        peer_id = read_node_id(peer_id, "peer id")
        if peer_id == self._own.node_id:
            raise ValueError("a node is not its own peer")
        return peer_id

    # ------------------------------------------------------------ gossip in

    def receive(self, now: float, sender_id: str, message: object) -> None:
        """Merges a gossip message from an authenticated, directly connected peer."""
        sender_id = read_node_id(sender_id, "sender id")
        check(sender_id != self._own.node_id, "gossip cannot come from our own id")
        gossip = GossipMessage.from_wire(message)
        check(len(self._removed | gossip.removed) <= MAX_SET_SIZE, "too many removed nodes")
        check(len(self._revoked | gossip.revoked) <= MAX_SET_SIZE, "too many revoked tokens")
        self._schedule.observe(now)
        if sender_id in self._removed:
            return  # a removed node has no say any more
        news = self._merge_sets(gossip)
        self._resolve_own_id_rivals(gossip)
        for record in gossip.records:
            news = self._merge_record(now, record) or news
        for node_id, count in gossip.heartbeats.items():
            if node_id in self._records and node_id not in self._removed:
                self._heartbeats.count_heartbeat(now, node_id, count)
        self._note_what_peer_has(sender_id, gossip)
        if news:
            self._make_due(now, self._connected - {sender_id})
        if self._peer_lacks_records(sender_id, now):
            self._make_due(now, {sender_id})  # its digest shows it is behind: answer now, not next round

    def _merge_sets(self, gossip: GossipMessage) -> bool:
        before = len(self._removed), len(self._revoked)
        self._removed |= gossip.removed
        self._revoked |= gossip.revoked
        return before != (len(self._removed), len(self._revoked))

    def _resolve_own_id_rivals(self, gossip: GossipMessage) -> None:
        own_id, own_generation = self._own.node_id, self._own.generation
        rivals = [r.generation for r in gossip.records if r.node_id == own_id and r != self._own]
        if gossip.generations.get(own_id, -1) > own_generation:
            rivals.append(gossip.generations[own_id])
        highest = max(rivals, default=-1)
        if highest >= own_generation:
            self._own = replace(self._own, generation=min(highest + 1, MAX_COUNTER))
            self.own_id_conflicts += 1  # sent with the next round, so two rivals cannot flood the mesh
        # A restarted process counts from 0 again; continue above what the mesh last heard.
        self._schedule.heartbeat = max(self._schedule.heartbeat, gossip.heartbeats.get(own_id, -1))

    def _merge_record(self, now: float, record: NodeRecord) -> bool:
        """Keeps `record` if it is newer; returns whether it is news to pass on at once.

        A node new to us is not: its heartbeats reach us one relay round per hop, and if its
        record outran them we would suspect it while they catch up.
        """
        node_id = record.node_id
        if node_id == self._own.node_id or node_id in self._removed:
            return False
        held = self._records.get(node_id)
        if held is None and (record.leaving or len(self._records) >= MAX_RECORDS - 1):
            return False  # a stranger's farewell means nothing to us
        if held is not None and record.generation <= held.generation:
            return False
        self._records[node_id] = record
        self._heartbeats.hear_from(now, node_id)
        return held is not None

    def _note_what_peer_has(self, sender_id: str, gossip: GossipMessage) -> None:
        if sender_id not in self._connected:
            return
        has = dict(gossip.generations)
        for record in gossip.records:
            has[record.node_id] = max(has.get(record.node_id, -1), record.generation)
        self._known_by_peer[sender_id] = has

    def _peer_lacks_records(self, peer_id: str, now: float) -> bool:
        has = self._known_by_peer.get(peer_id)
        return has is not None and any(_worth_sending(r, has) for r in self._shareable_records(now))

    # ------------------------------------------------------------ gossip out

    def messages_to_send(self, now: float) -> list[tuple[str, dict]]:
        """(peer id, message) pairs due now: every connected peer once per heartbeat interval,
        and at once after a local change, a new connection, or news from another peer."""
        due = self._schedule.take_due(now, self._connected)
        recipients = sorted(due & self._connected - self._removed)
        if not recipients:
            return []
        shareable = self._shareable_records(now)
        return [(peer, self._message_for(peer, shareable).to_wire()) for peer in recipients]

    def _shareable_records(self, now: float) -> list[NodeRecord]:
        """Our record and every record we hold as alive, suspect or just left; never the dead."""
        others = [r for i, r in self._records.items() if self._state_of(i, now) in SHAREABLE]
        return [self._own, *others]

    def _message_for(self, peer_id: str, shareable: list[NodeRecord]) -> GossipMessage:
        has = self._known_by_peer.setdefault(peer_id, {})
        records = tuple(record for record in shareable if _worth_sending(record, has))
        for record in records:
            has[record.node_id] = record.generation  # optimistic; the peer's next digest corrects it
        relayed_ids = [record.node_id for record in shareable] + [peer_id]  # the peer's own, for restarts
        heartbeats = {node_id: self._heartbeat_of(node_id) for node_id in relayed_ids}
        return GossipMessage(
            records=records,
            heartbeats={node_id: count for node_id, count in heartbeats.items() if count >= 0},
            generations={i: r.generation for i, r in [(self._own.node_id, self._own), *self._records.items()]},
            removed=frozenset(self._removed),
            revoked=frozenset(self._revoked),
        )

    def _heartbeat_of(self, node_id: str) -> int:
        own = node_id == self._own.node_id
        return self._schedule.heartbeat if own else self._heartbeats.heartbeat_of(node_id)

    # ------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        """The earliest time at which `messages_to_send` or `expire` has work; None before any event."""
        return min(self._schedule.deadlines() + self._heartbeats.deadlines(self._may_still_die), default=None)

    def expire(self, now: float) -> list[str]:
        """Returns the ids that became dead since the last call; forgets long-gone nodes."""
        self._schedule.observe(now)
        just_dead = [i for i in sorted(self._records) if self._may_still_die(i) and self._state_of(i, now) == Liveness.DEAD]
        self._heartbeats.reported_dead.update(just_dead)
        self._forget_long_gone(now)
        return just_dead

    def _may_still_die(self, node_id: str) -> bool:
        gone_already = node_id in self._heartbeats.reported_dead or node_id in self._removed
        return not gone_already and not self._records[node_id].leaving

    def _forget_long_gone(self, now: float) -> None:
        for node_id in self._heartbeats.long_silent(now):
            if self._state_of(node_id, now) in GONE:
                del self._records[node_id]
                self._heartbeats.forget(node_id)

    def _make_due(self, now: float, peers: set[str]) -> None:
        self._schedule.make_due(now, peers - self._removed)

    # ------------------------------------------------------------ queries

    def _state_of(self, node_id: str, now: float) -> Liveness:
        if node_id in self._removed:
            return Liveness.REMOVED
        if self._records[node_id].leaving:
            return Liveness.LEFT
        return self._heartbeats.state(node_id, now)

    @property
    def own(self) -> NodeRecord:
        return self._own

    @property
    def removed_node_ids(self) -> frozenset[str]:
        return frozenset(self._removed)

    @property
    def revoked_token_ids(self) -> frozenset[str]:
        return frozenset(self._revoked)

    def alive_records(self, now: float) -> list[NodeRecord]:
        """Every node we hold as alive or suspect, ourselves included unless we left or were removed."""
        alive = [r for i, r in self._records.items() if self._state_of(i, now) in MEMBERS]
        if not self._own.leaving and self._own.node_id not in self._removed:
            alive.append(self._own)
        return sorted(alive, key=lambda record: record.node_id)

    def peer_states(self, now: float) -> dict[str, dict]:
        """node id -> {"state": one of LIVENESS_STATES, "last_seen_s": seconds since last heard}, peers only."""
        return {
            node_id: {"state": self._state_of(node_id, now), "last_seen_s": self._heartbeats.silent_for(node_id, now)}
            for node_id in sorted(self._records)
        }
