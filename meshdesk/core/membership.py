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

Wire format, version 1 (a JSON object)::

    {"type": "gossip", "v": 1, "records": [record, ...], "heartbeats": {node_id: int},
     "generations": {node_id: int}, "removed": [node_id, ...], "revoked": [token_id, ...]}

Anything malformed raises `MembershipError` (a one-line `ValueError`) and changes nothing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields, replace

MESSAGE_TYPE = "gossip"
PROTOCOL_VERSION = 1
ROLES = ("host", "worker", "client", "standby")
LIVENESS_STATES = ("alive", "suspect", "dead", "left", "removed")

MAX_RECORDS = 1024  # per message, and records held (own included)
MAX_ID_LENGTH = 64
MAX_TOKEN_ID_LENGTH = 128
MAX_SET_SIZE = 4096  # removed node ids, revoked token ids
MAX_NAME_LENGTH = 256
MAX_TEXT_LENGTH = 1024
MAX_HOST_LENGTH = 253
MAX_ADDRESSES = 16
MAX_MODELS = 256
MAX_JSON_DEPTH = 8
MAX_JSON_VALUES = 4096  # per opaque field (models, versions)
MAX_COUNTER = 2**63 - 1
FORGET_AFTER_DEAD_AFTER_TIMES = 10


class MembershipError(ValueError):
    """A malformed record or gossip message; the text is one line."""


# ---------------------------------------------------------------- validation helpers


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise MembershipError(problem)


def _quote(value: object) -> str:
    return repr(value)[:40]  # repr escapes newlines, so errors stay one line


def _text(value: object, what: str, max_length: int = MAX_TEXT_LENGTH, *, empty_ok: bool = True) -> str:
    _check(isinstance(value, str), f"{what} must be a string")
    _check(len(value) <= max_length, f"{what} is longer than {max_length} characters")
    _check(empty_ok or value != "", f"{what} is empty")
    return value


def _node_id(value: object, what: str = "node id") -> str:
    return _text(value, what, MAX_ID_LENGTH, empty_ok=False)


def _counter(value: object, what: str) -> int:
    _check(type(value) is int, f"{what} must be an integer")
    _check(0 <= value <= MAX_COUNTER, f"{what} is out of range")
    return value


def _sequence(value: object, what: str, max_items: int) -> list | tuple:
    _check(isinstance(value, (list, tuple)), f"{what} must be a list")
    _check(len(value) <= max_items, f"{what} has more than {max_items} items")
    return value


def _mapping(value: object, what: str, max_items: int) -> dict:
    _check(isinstance(value, dict), f"{what} must be an object")
    _check(len(value) <= max_items, f"{what} has more than {max_items} entries")
    return value


def _require_fields(data: dict, expected: frozenset[str], what: str) -> None:
    missing = sorted(expected - data.keys())
    if missing:
        raise MembershipError(f"{what} lacks {missing[0]}")
    unknown = [key for key in data if key not in expected]
    if unknown:
        raise MembershipError(f"{what} has unknown field {_quote(unknown[0])}")


class _Budget:
    """Counts the values of one opaque JSON field, so a hostile peer cannot make it huge."""

    def __init__(self, values: int):
        self.remaining = values

    def spend(self, what: str) -> None:
        self.remaining -= 1
        _check(self.remaining >= 0, f"{what} is too large")


def _json_copy(value: object, what: str, budget: _Budget, depth: int = 0) -> object:
    """A deep copy of plain JSON data (tuples become lists); anything else is refused."""
    budget.spend(what)
    _check(depth <= MAX_JSON_DEPTH, f"{what} is nested too deeply")
    if value is None or type(value) is bool:
        return value
    if type(value) is int:
        _check(abs(value) <= MAX_COUNTER, f"{what} holds an integer out of range")
        return value
    if type(value) is float:
        _check(math.isfinite(value), f"{what} holds a number that is not finite")
        return value
    if type(value) is str:
        return _text(value, what)
    if type(value) in (list, tuple):
        return [_json_copy(item, what, budget, depth + 1) for item in value]
    if type(value) is dict:
        return {
            _text(key, f"{what} key"): _json_copy(item, what, budget, depth + 1) for key, item in value.items()
        }
    raise MembershipError(f"{what} holds a {type(value).__name__}, which is not JSON")


def _json_object(value: object, what: str, budget: _Budget) -> dict:
    _check(type(value) is dict, f"{what} must be an object")
    return _json_copy(value, what, budget)


def _address(value: object) -> tuple[str, int]:
    _check(isinstance(value, (list, tuple)) and len(value) == 2, "each address must be a [host, port] pair")
    host, port = value
    _text(host, "address host", MAX_HOST_LENGTH, empty_ok=False)
    _check(type(port) is int and 1 <= port <= 65535, "address port is out of range")
    return (host, port)


def _rtt(value: object, what: str) -> float:
    _check(type(value) in (int, float), f"{what} must be a number")
    _check(math.isfinite(value) and value >= 0, f"{what} must be finite and not negative")
    return float(value)


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class NodeRecord:
    """What one node tells the mesh about itself. Validated and normalised on construction;
    `models` and `versions` are opaque JSON, `rtt_ms` maps peer ids to this node's round trip
    times. Treat the dicts inside as read-only."""

    node_id: str
    name: str
    addresses: tuple[tuple[str, int], ...]
    capacity_bytes: int
    models: tuple[dict, ...]
    serving: str | None
    role: str
    versions: dict
    rtt_ms: dict
    public_key: str
    generation: int
    leaving: bool = False

    def __post_init__(self) -> None:
        for name, value in _validated_fields(self).items():
            object.__setattr__(self, name, value)

    def to_wire(self) -> dict:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "addresses": [[host, port] for host, port in self.addresses],
            "capacity_bytes": self.capacity_bytes,
            "models": copy.deepcopy(list(self.models)),
            "serving": self.serving,
            "role": self.role,
            "versions": copy.deepcopy(self.versions),
            "rtt_ms": dict(self.rtt_ms),
            "public_key": self.public_key,
            "generation": self.generation,
            "leaving": self.leaving,
        }

    @classmethod
    def from_wire(cls, data: object) -> NodeRecord:
        _check(isinstance(data, dict), "a node record must be an object")
        _require_fields(data, RECORD_FIELDS, "node record")
        return cls(**data)


RECORD_FIELDS = frozenset(field.name for field in fields(NodeRecord))


def _validated_fields(record: NodeRecord) -> dict:
    _check(isinstance(record.role, str) and record.role in ROLES, f"role must be one of {', '.join(ROLES)}")
    _check(type(record.leaving) is bool, "leaving must be true or false")
    serving = record.serving
    return {
        "node_id": _node_id(record.node_id),
        "name": _text(record.name, "name", MAX_NAME_LENGTH),
        "addresses": tuple(_address(item) for item in _sequence(record.addresses, "addresses", MAX_ADDRESSES)),
        "capacity_bytes": _counter(record.capacity_bytes, "capacity_bytes"),
        "models": _models(record.models),
        "serving": None if serving is None else _text(serving, "serving", empty_ok=False),
        "versions": _json_object(record.versions, "versions", _Budget(MAX_JSON_VALUES)),
        "rtt_ms": _rtt_table(record.rtt_ms),
        "public_key": _text(record.public_key, "public_key"),
        "generation": _counter(record.generation, "generation"),
    }


def _models(value: object) -> tuple[dict, ...]:
    budget = _Budget(MAX_JSON_VALUES)
    return tuple(_json_object(item, "models", budget) for item in _sequence(value, "models", MAX_MODELS))


def _rtt_table(value: object) -> dict[str, float]:
    table = _mapping(value, "rtt_ms", MAX_RECORDS)
    return {_node_id(peer, "rtt_ms peer id"): _rtt(rtt, "rtt_ms value") for peer, rtt in table.items()}


# ---------------------------------------------------------------- messages


MESSAGE_FIELDS = frozenset({"type", "v", "records", "heartbeats", "generations", "removed", "revoked"})


@dataclass(frozen=True)
class GossipMessage:
    """One validated gossip message."""

    records: tuple[NodeRecord, ...]
    heartbeats: dict[str, int]
    generations: dict[str, int]
    removed: frozenset[str]
    revoked: frozenset[str]

    def to_wire(self) -> dict:
        return {
            "type": MESSAGE_TYPE,
            "v": PROTOCOL_VERSION,
            "records": [record.to_wire() for record in self.records],
            "heartbeats": dict(self.heartbeats),
            "generations": dict(self.generations),
            "removed": sorted(self.removed),
            "revoked": sorted(self.revoked),
        }

    @classmethod
    def from_wire(cls, data: object) -> GossipMessage:
        _check(isinstance(data, dict), "a gossip message must be an object")
        _require_fields(data, MESSAGE_FIELDS, "gossip message")
        _check(isinstance(data["type"], str) and data["type"] == MESSAGE_TYPE, "not a gossip message")
        _check(type(data["v"]) is int and data["v"] == PROTOCOL_VERSION, "unsupported gossip version")
        return cls(
            records=_records(data["records"]),
            heartbeats=_counter_table(data["heartbeats"], "heartbeats"),
            generations=_counter_table(data["generations"], "generations"),
            removed=_id_set(data["removed"], "removed", MAX_ID_LENGTH),
            revoked=_id_set(data["revoked"], "revoked", MAX_TOKEN_ID_LENGTH),
        )


def _records(value: object) -> tuple[NodeRecord, ...]:
    records = tuple(NodeRecord.from_wire(item) for item in _sequence(value, "records", MAX_RECORDS))
    _check(len({record.node_id for record in records}) == len(records), "records repeat a node id")
    return records


def _counter_table(value: object, what: str) -> dict[str, int]:
    table = _mapping(value, what, MAX_RECORDS)
    return {
        _node_id(node_id, f"{what} node id"): _counter(count, f"{what} value") for node_id, count in table.items()
    }


def _id_set(value: object, what: str, max_length: int) -> frozenset[str]:
    items = _sequence(value, what, MAX_SET_SIZE)
    return frozenset(_text(item, f"{what} id", max_length, empty_ok=False) for item in items)


# ---------------------------------------------------------------- membership


def _worth_sending(record: NodeRecord, peer_has: dict[str, int]) -> bool:
    """Newer than the peer's copy; a farewell only to peers that know the node at all."""
    if record.leaving and record.node_id not in peer_has:
        return False
    return record.generation > peer_has.get(record.node_id, -1)


class Membership:
    """The gossip state of one node. See the module docstring for the protocol."""

    def __init__(
        self,
        own: NodeRecord,
        *,
        suspect_after: float = 3.0,
        dead_after: float = 6.0,
        heartbeat_interval: float = 1.0,
    ):
        if not (0 < heartbeat_interval and 0 < suspect_after < dead_after):
            raise ValueError("need 0 < heartbeat_interval and 0 < suspect_after < dead_after")
        self._own = own
        self._suspect_after = suspect_after
        self._dead_after = dead_after
        self._forget_after = dead_after * FORGET_AFTER_DEAD_AFTER_TIMES
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat = 0
        self._records: dict[str, NodeRecord] = {}  # other nodes only
        self._heartbeats: dict[str, int] = {}
        self._last_heard: dict[str, float] = {}
        self._reported_dead: set[str] = set()
        self._removed: set[str] = set()
        self._revoked: set[str] = set()
        self._connected: set[str] = set()
        self._known_by_peer: dict[str, dict[str, int]] = {}  # peer -> node id -> generation it has
        self._due_peers: set[str] = set()
        self._send_due_at: float | None = None
        self._next_round: float | None = None  # set by the first event
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
        node_id = _node_id(node_id)
        if node_id == self._own.node_id:
            raise ValueError("a node cannot remove itself; use leave()")
        _check(len(self._removed | {node_id}) <= MAX_SET_SIZE, "too many removed nodes")
        self._observe(now)
        self._removed.add(node_id)
        self._make_due(now, self._connected)

    def revoke_token(self, now: float, token_id: str) -> None:
        token_id = _text(token_id, "token id", MAX_TOKEN_ID_LENGTH, empty_ok=False)
        _check(len(self._revoked | {token_id}) <= MAX_SET_SIZE, "too many revoked tokens")
        self._observe(now)
        self._revoked.add(token_id)
        self._make_due(now, self._connected)

    def _replace_own(self, now: float, record: NodeRecord) -> None:
        self._observe(now)
        self._own = record
        self._make_due(now, self._connected)

    # ------------------------------------------------------------ connection events

    def peer_connected(self, now: float, peer_id: str) -> None:
        """An authenticated connection to `peer_id` is up: we tell it everything at once."""
        peer_id = self._peer_id(peer_id)
        self._observe(now)
        self._connected.add(peer_id)
        self._known_by_peer[peer_id] = {}
        self._make_due(now, {peer_id})

    def peer_disconnected(self, now: float, peer_id: str) -> None:
        """The connection is gone; that alone says nothing about the peer being alive."""
        peer_id = self._peer_id(peer_id)
        self._observe(now)
        self._connected.discard(peer_id)
        self._due_peers.discard(peer_id)
        self._known_by_peer.pop(peer_id, None)

    def _peer_id(self, peer_id: object) -> str:
        peer_id = _node_id(peer_id, "peer id")
        if peer_id == self._own.node_id:
            raise ValueError("a node is not its own peer")
        return peer_id

    # ------------------------------------------------------------ gossip in

    def receive(self, now: float, sender_id: str, message: object) -> None:
        """Merges a gossip message from an authenticated, directly connected peer."""
        sender_id = _node_id(sender_id, "sender id")
        _check(sender_id != self._own.node_id, "gossip cannot come from our own id")
        gossip = GossipMessage.from_wire(message)
        _check(len(self._removed | gossip.removed) <= MAX_SET_SIZE, "too many removed nodes")
        _check(len(self._revoked | gossip.revoked) <= MAX_SET_SIZE, "too many revoked tokens")
        self._observe(now)
        if sender_id in self._removed:
            return  # a removed node has no say any more
        news = self._merge_sets(gossip)
        self._resolve_own_id_rivals(gossip)
        for record in gossip.records:
            news = self._merge_record(now, record) or news
        self._merge_heartbeats(now, gossip.heartbeats)
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
        self._heartbeat = max(self._heartbeat, gossip.heartbeats.get(own_id, -1))

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
        self._hear_from(now, node_id)
        return held is not None

    def _merge_heartbeats(self, now: float, heartbeats: dict[str, int]) -> None:
        for node_id, count in heartbeats.items():
            if node_id not in self._records or node_id in self._removed:
                continue
            if count > self._heartbeats.get(node_id, -1):
                self._heartbeats[node_id] = count
                self._hear_from(now, node_id)

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

    def _hear_from(self, now: float, node_id: str) -> None:
        self._last_heard[node_id] = now
        self._reported_dead.discard(node_id)

    # ------------------------------------------------------------ gossip out

    def messages_to_send(self, now: float) -> list[tuple[str, dict]]:
        """(peer id, message) pairs due now: every connected peer once per heartbeat interval,
        and at once after a local change, a new connection, or news from another peer."""
        self._observe(now)
        if now >= self._next_round:
            self._start_round(now)
        recipients = sorted(self._due_peers & self._connected - self._removed)
        self._due_peers.clear()
        self._send_due_at = None
        if not recipients:
            return []
        shareable = self._shareable_records(now)
        return [(peer, self._message_for(peer, shareable).to_wire()) for peer in recipients]

    def _start_round(self, now: float) -> None:
        self._heartbeat = min(self._heartbeat + 1, MAX_COUNTER)
        on_schedule = self._next_round + self._heartbeat_interval
        self._next_round = on_schedule if on_schedule > now else now + self._heartbeat_interval
        self._make_due(now, self._connected)

    def _shareable_records(self, now: float) -> list[NodeRecord]:
        """Our record and every record we hold as alive, suspect or just left; never the dead."""
        others = [r for i, r in self._records.items() if self._state_of(i, now) in ("alive", "suspect", "left")]
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
        return self._heartbeat if node_id == self._own.node_id else self._heartbeats.get(node_id, -1)

    # ------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        """The earliest time at which `messages_to_send` or `expire` has work; None before any event."""
        candidates = [time for time in (self._next_round, self._send_due_at) if time is not None]
        for node_id, heard in self._last_heard.items():
            candidates.append(heard + self._forget_after)
            if self._may_still_die(node_id):
                candidates.append(heard + self._dead_after)
        return min(candidates, default=None)

    def expire(self, now: float) -> list[str]:
        """Returns the ids that became dead since the last call; forgets long-gone nodes."""
        self._observe(now)
        just_dead = [i for i in sorted(self._records) if self._may_still_die(i) and self._state_of(i, now) == "dead"]
        self._reported_dead.update(just_dead)
        self._forget_long_gone(now)
        return just_dead

    def _may_still_die(self, node_id: str) -> bool:
        gone_already = node_id in self._reported_dead or node_id in self._removed
        return not gone_already and not self._records[node_id].leaving

    def _forget_long_gone(self, now: float) -> None:
        gone = [
            node_id
            for node_id, heard in self._last_heard.items()
            if now >= heard + self._forget_after and self._state_of(node_id, now) in ("dead", "left", "removed")
        ]
        for node_id in gone:
            for table in (self._records, self._heartbeats, self._last_heard):
                del table[node_id]
            self._reported_dead.discard(node_id)

    def _observe(self, now: float) -> None:
        if self._next_round is None:
            self._next_round = now

    def _make_due(self, now: float, peers: set[str]) -> None:
        peers = peers - self._removed
        if peers:
            self._due_peers |= peers
            self._send_due_at = now if self._send_due_at is None else min(self._send_due_at, now)

    # ------------------------------------------------------------ queries

    def _state_of(self, node_id: str, now: float) -> str:
        if node_id in self._removed:
            return "removed"
        if self._records[node_id].leaving:
            return "left"
        heard = self._last_heard[node_id]  # compared as sums, exactly as next_deadline computes them
        if now >= heard + self._dead_after:
            return "dead"
        return "suspect" if now >= heard + self._suspect_after else "alive"

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
        alive = [r for i, r in self._records.items() if self._state_of(i, now) in ("alive", "suspect")]
        if not self._own.leaving and self._own.node_id not in self._removed:
            alive.append(self._own)
        return sorted(alive, key=lambda record: record.node_id)

    def peer_states(self, now: float) -> dict[str, dict]:
        """node id -> {"state": one of LIVENESS_STATES, "last_seen_s": seconds since last heard}, peers only."""
        return {
            node_id: {"state": self._state_of(node_id, now), "last_seen_s": now - self._last_heard[node_id]}
            for node_id in sorted(self._records)
        }
