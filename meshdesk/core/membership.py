"""Gossip membership: who is in the mesh, what each node offers, and who is still alive.

Sans-IO: one `Membership` object per node. Events go in (`update_own`, `receive`,
`peer_connected`, ...), each with `now` (monotonic seconds); gossip messages come out of
`messages_to_send(now)`; `next_deadline()` says when to call again; `expire(now)` reports deaths.

How it works (Scuttlebutt-style anti-entropy with a SWIM-style heartbeat table):

- Each node owns one `NodeRecord`, signs it (`sign`), and bumps its `generation` on every
  change; the higher generation wins everywhere. Only the owner can change its record: a
  record is taken only when its key derives to its id and signed it (`verify`); one that does
  not is the sender's fault (an honest relayer checked it too) and drops the sender. When a
  peer shows us a validly signed rival record for our own id (a restarted process, or a copied
  key), we bump ours above it; a mere claim in a digest moves nothing.
- Generations are bounded: a node starts from a wall-clock-based generation (milliseconds
  since the epoch), so a restart wins at once; a record more than GENERATION_MARGIN_MS ahead
  of that clock, as this node keeps it from its own start, is left out and counted
  (`refused_records`), so no record can be pushed to 2^63-1 and frozen there.
- Each node counts its own heartbeat up once per `heartbeat_interval` and every message carries
  the heartbeats of all nodes the sender holds as not dead. A node is "heard" when its heartbeat
  or its generation goes up, whoever relays it, so liveness spreads to nodes with no direct
  connection, and a killed node stops counting and is declared dead everywhere.
- Every message also carries a digest (`generations`) of the records the sender holds, so a
  peer sends only records newer than what we have; a lost message is repaired on the next round.
- Removals, revocations and admin grants are signed entries (`core.authority`), grow-only,
  admitted only from the mesh's authority (the founder's key) and the admins it names, and
  bounded per signer and in all; the rest are ignored and counted (`ignored_entries`). A
  node without an authority learns it from the peer named by `learn_authority_from` (the
  inviter it joined through).
- The models the mesh wants served, or dropped, are entries of a last-writer-wins ledger
  (`core.wants`, `core.membership_wants`) that any member may write; each peer is sent the
  entries it has not had, so every node converges on the same set.
- What one round tells a peer is split into messages that each fit a frame.

Wire formats: `core.gossip_message` (messages), `core.node_record` (records) and
`core.model_advert` (the models in a record). Anything malformed raises `MembershipError`
(one line, a `core.errors.PeerProtocolError`) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from meshdesk.core import authority
from meshdesk.core.authority import Ledger, NotAuthorised
from meshdesk.core.gossip_message import GossipMessage
from meshdesk.core.gossip_out import GossipOut, worth_sending
from meshdesk.core.membership_decrees import Decrees
from meshdesk.core.membership_wants import Wants
from meshdesk.core.gossip_schedule import GossipSchedule
from meshdesk.core.gossip_values import MAX_COUNTER, MembershipError, read_node_id
from meshdesk.core.heartbeats import HeartbeatTable, LinkEvidence
from meshdesk.core.node_record import MAX_RECORDS, RECORD_FIELDS, NodeRecord, check_signed, signed
from meshdesk.core.states import LIVENESS_STATES, Liveness

MEMBERS = (Liveness.ALIVE, Liveness.SUSPECT)  # still counted in the mesh
SHAREABLE = (*MEMBERS, Liveness.LEFT)          # records worth gossiping on
GONE = (Liveness.DEAD, Liveness.LEFT, Liveness.REMOVED)  # forgotten after long silence
GENERATION_MARGIN_MS = 7 * 24 * 3600 * 1000  # how far ahead of our clock a peer's clock may run
MAX_ADOPTED_HEARTBEAT = 2**40  # a restart continues above the mesh's count, up to this

# node.mesh imports the record and the error from here, with Membership.
__all__ = ["LIVENESS_STATES", "Membership", "MembershipError", "NodeRecord", "NotAuthorised"]


class Membership(Decrees, Wants, GossipOut, LinkEvidence):
    """The gossip state of one node. See the module docstring for the protocol."""

    def __init__(self, own: NodeRecord, *, sign: Callable[[bytes], bytes],
                 verify: Callable[[bytes, bytes, bytes], bool], authority_key: str | None = None,
                 learn_authority_from: str | None = None, suspect_after: float = 3.0,
                 dead_after: float = 6.0, heartbeat_interval: float = 1.0):
        if not (0 < heartbeat_interval and 0 < suspect_after < dead_after):
            raise ValueError("need 0 < heartbeat_interval and 0 < suspect_after < dead_after")
        self._sign, self._verify = sign, verify
        self._own = signed(own, sign)
        self._records: dict[str, NodeRecord] = {}  # other nodes only
        self._heartbeats = HeartbeatTable(suspect_after, dead_after)
        known = isinstance(authority_key, str) and authority.key_id(authority_key) is not None
        self._ledger = Ledger(authority_key if known else None, verify)
        self._learn_from = learn_authority_from
        self._connected: set[str] = set()
        self._known_by_peer: dict[str, dict[str, int]] = {}  # peer -> node id -> generation it has
        self._entries_sent: dict[str, set] = {}  # peer -> keys of the entries it has had from us or sent us
        self._init_wants()
        self._schedule = GossipSchedule(heartbeat_interval)
        self._clock_origin: tuple[float, int] | None = None  # (now, our generation) at the first event
        self.own_id_conflicts = 0  # rival records for our id seen; a steady rise means a copied key
        self.refused_records = 0   # records with a generation too far ahead, left out

    # ------------------------------------------------------------ local events

    def update_own(self, now: float, **changes: object) -> None:
        """Changes our record (not its id, generation or leaving flag) and gossips it at once."""
        forbidden = sorted(set(changes) & {"node_id", "generation", "leaving", "signature", "public_key"})
        unknown = sorted(set(changes) - RECORD_FIELDS)
        if forbidden or unknown:
            raise ValueError(f"update_own cannot change {', '.join(forbidden + unknown)}")
        candidate = replace(self._own, **changes, signature="")
        if candidate == replace(self._own, signature=""):
            return
        self._replace_own(now, replace(candidate, generation=_next(self._own.generation)))

    def leave(self, now: float) -> None:
        """We quit normally: peers drop us as soon as this record reaches them."""
        self._replace_own(now, replace(self._own, leaving=True, generation=_next(self._own.generation)))

    def _replace_own(self, now: float, record: NodeRecord) -> None:
        self._observe(now)
        self._own = signed(record, self._sign)
        self._make_due(now, self._connected)

    # ------------------------------------------------------------ connection events

    def peer_connected(self, now: float, peer_id: str) -> None:
        """An authenticated connection to `peer_id` is up: we tell it everything at once."""
        peer_id = self._peer_id(peer_id)
        self._observe(now)
        self._connected.add(peer_id)
        self._known_by_peer[peer_id] = {}
        self._entries_sent[peer_id] = set()
        self._wants_sent[peer_id] = {}
        self._make_due(now, {peer_id})

    def peer_disconnected(self, now: float, peer_id: str) -> None:
        """The connection is gone; that alone says nothing about the peer being alive."""
        peer_id = self._peer_id(peer_id)
        self._observe(now)
        self._connected.discard(peer_id)
        self._schedule.due_peers.discard(peer_id)
        self._known_by_peer.pop(peer_id, None)
        self._entries_sent.pop(peer_id, None)
        self._wants_sent.pop(peer_id, None)

    def _peer_id(self, peer_id: object) -> str:
        peer_id = read_node_id(peer_id, "peer id")
        if peer_id == self._own.node_id:
            raise ValueError("a node is not its own peer")
        return peer_id

    # ------------------------------------------------------------ gossip in

    def receive(self, now: float, sender_id: str, message: object) -> None:
        """Merges a gossip message from an authenticated, directly connected peer. Raises
        MembershipError, and changes nothing, when the message is malformed or carries a
        record its node did not sign, or an entry its named signer did not sign."""
        sender_id = read_node_id(sender_id, "sender id")
        if sender_id == self._own.node_id:
            raise MembershipError("gossip cannot come from our own id")
        gossip = GossipMessage.from_wire(message)
        for record in gossip.records:
            if self._would_take(record):
                check_signed(record, self._verify)
        for entry in gossip.entries:
            self._ledger.check_signature(entry)
        self._observe(now)
        if sender_id in self._removed:
            return  # a removed node has no say any more
        self._learn_authority(sender_id, gossip.authority)
        news = self._ledger.admit_all(gossip.entries)
        self._entries_sent.setdefault(sender_id, set()).update(entry.key for entry in gossip.entries)
        news = self._take_wants(sender_id, gossip.wants, now) or news
        self._resolve_own_id_rivals(now, gossip)
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

    def _would_take(self, record: NodeRecord) -> bool:
        """Whether `record` could change what we hold (only those are worth a signature check)."""
        if record.node_id == self._own.node_id:
            return record.generation >= self._own.generation and record != self._own
        held = self._records.get(record.node_id)
        return held is None or record.generation > held.generation

    def _resolve_own_id_rivals(self, now: float, gossip: GossipMessage) -> None:
        own_id, own_generation = self._own.node_id, self._own.generation
        rivals = [r.generation for r in gossip.records if r.node_id == own_id and r != self._own
                  and r.generation <= self._generation_limit(now)]
        highest = max(rivals, default=-1)
        if highest >= own_generation:
            self._own = signed(replace(self._own, generation=_next(highest)), self._sign)
            self.own_id_conflicts += 1  # sent with the next round, so two rivals cannot flood the mesh
        # A restarted process counts from 0 again; continue above what the mesh last heard.
        heard = min(gossip.heartbeats.get(own_id, -1), MAX_ADOPTED_HEARTBEAT)  # never frozen at the top
        self._schedule.heartbeat = max(self._schedule.heartbeat, heard)

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
        if record.generation > self._generation_limit(now):
            self.refused_records += 1
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
        return has is not None and any(worth_sending(r, has) for r in self._shareable_records(now))

    def _shareable_records(self, now: float) -> list[NodeRecord]:
        """Our record and every record we hold as alive, suspect or just left; never the dead."""
        others = [r for i, r in self._records.items() if self._state_of(i, now) in SHAREABLE]
        return [self._own, *others]

    # ------------------------------------------------------------ time

    def _observe(self, now: float) -> None:
        if self._clock_origin is None:
            self._clock_origin = (now, self._own.generation)
        self._schedule.observe(now)

    def _clock_ms(self, now: float) -> int:
        """Our wall clock in milliseconds, as our start generation and `now` tell it."""
        origin_now, origin_generation = self._clock_origin or (now, self._own.generation)
        return min(origin_generation + max(0, int((now - origin_now) * 1000)), MAX_COUNTER)

    def _generation_limit(self, now: float) -> int:
        return min(self._clock_ms(now) + GENERATION_MARGIN_MS, MAX_COUNTER)

    def next_deadline(self) -> float | None:
        """The earliest time at which `messages_to_send` or `expire` has work; None before any event."""
        return min(self._schedule.deadlines() + self._heartbeats.deadlines(self._may_still_die), default=None)

    def expire(self, now: float) -> list[str]:
        """Returns the ids that became dead since the last call; forgets long-gone nodes."""
        self._observe(now)
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

    @property
    def _removed(self) -> set[str]:
        return self._ledger.subjects(authority.REMOVE)

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
        return frozenset(self._ledger.subjects(authority.REVOKE))

    @property
    def authority(self) -> Ledger:
        """The mesh's authority key (`.authority`), the entries held, and `.ignored` entries."""
        return self._ledger

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


def _next(generation: int) -> int:
    return min(generation + 1, MAX_COUNTER)
