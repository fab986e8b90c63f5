"""The gossip message, version 4: what one node sends another each round (`core.membership`).

Wire format (a JSON object)::

    {"type": "gossip", "v": 4, "records": [record, ...], "heartbeats": {node_id: int},
     "generations": {node_id: int}, "entries": [authority entry, ...], "authority": key hex or null,
     "wants": [want entry, ...]}

Records are `core.node_record` (each signed by its node), entries `core.authority` (removals,
revocations and admin grants, each signed by its maker), wants `core.wants` (the models the
mesh serves or dropped, last writer wins); v3 added `wants` and records' `layer_space_bytes`;
v4 (mesh protocol 4) changed no field: it goes with requests that carry tools.
Anything malformed raises `MembershipError` (one line). `split` cuts what one round says into messages that each fit a
frame (`core.frames.MAX_FRAME_BYTES`), however large the records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from meshdesk.core.authority import MAX_ENTRIES, Entry
from meshdesk.core.frames import MAX_FRAME_BYTES
from meshdesk.core.gossip_values import (
    check,
    read_counter,
    read_list,
    read_mapping,
    read_node_id,
    read_text,
    require_fields,
)
from meshdesk.core.node_record import MAX_RECORDS, NodeRecord
from meshdesk.core.wants import MAX_WANTS, WantEntry

MESSAGE_TYPE = "gossip"
PROTOCOL_VERSION = 4
MAX_SET_SIZE = MAX_ENTRIES  # entries per message, and held
MESSAGE_BUDGET = MAX_FRAME_BYTES * 3 // 4  # what `split` fills a message to, leaving room to spare

MESSAGE_FIELDS = frozenset({"type", "v", "records", "heartbeats", "generations", "entries", "authority", "wants"})


@dataclass(frozen=True)
class GossipMessage:
    """One validated gossip message."""

    records: tuple[NodeRecord, ...]
    heartbeats: dict[str, int]
    generations: dict[str, int]
    entries: tuple[Entry, ...] = ()
    authority: str | None = None
    wants: tuple[WantEntry, ...] = ()

    def to_wire(self) -> dict:
        return {
            "type": MESSAGE_TYPE,
            "v": PROTOCOL_VERSION,
            "records": [record.to_wire() for record in self.records],
            "heartbeats": dict(self.heartbeats),
            "generations": dict(self.generations),
            "entries": [entry.to_wire() for entry in self.entries],
            "authority": self.authority,
            "wants": [entry.to_wire() for entry in self.wants],
        }

    @classmethod
    def from_wire(cls, data: object) -> GossipMessage:
        check(isinstance(data, dict), "a gossip message must be an object")
        require_fields(data, MESSAGE_FIELDS, "gossip message")
        check(isinstance(data["type"], str) and data["type"] == MESSAGE_TYPE, "not a gossip message")
        check(type(data["v"]) is int and data["v"] == PROTOCOL_VERSION, "unsupported gossip version")
        return cls(
            records=_records(data["records"]),
            heartbeats=_counter_table(data["heartbeats"], "heartbeats"),
            generations=_counter_table(data["generations"], "generations"),
            entries=tuple(Entry.from_wire(item) for item in read_list(data["entries"], "entries", MAX_SET_SIZE)),
            authority=None if data["authority"] is None else read_text(data["authority"], "authority", 64),
            wants=_wants(data["wants"]),
        )

    def split(self, budget: int = MESSAGE_BUDGET) -> tuple[list[GossipMessage], int]:
        """Messages that together say what this one says, each at most `budget` bytes of JSON
        (each carries the heartbeats and digest; records, entries and wants are shared out). Returns
        them and how many records were left out, each larger than a message can be."""
        base = _size(replace(self, records=(), entries=(), wants=()).to_wire())
        parts: list[list] = [[]]
        room = budget - base
        left_out = 0
        for item in [*self.records, *self.entries, *self.wants]:
            size = _size(item.to_wire()) + 1  # and a comma
            if size > budget - base:
                left_out += 1
                continue
            if size > room:
                parts.append([])
                room = budget - base
            parts[-1].append(item)
            room -= size
        messages = [replace(self, records=tuple(i for i in part if isinstance(i, NodeRecord)),
                            entries=tuple(i for i in part if isinstance(i, Entry)),
                            wants=tuple(i for i in part if isinstance(i, WantEntry))) for part in parts]
        return messages, left_out


def _size(wire: dict) -> int:
    """Bytes of JSON, as `core.frames.encode_frame` writes them."""
    return len(json.dumps(wire, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())


def _records(value: object) -> tuple[NodeRecord, ...]:
    records = tuple(NodeRecord.from_wire(item) for item in read_list(value, "records", MAX_RECORDS))
    check(len({record.node_id for record in records}) == len(records), "records repeat a node id")
    return records


def _wants(value: object) -> tuple[WantEntry, ...]:
    wants = tuple(WantEntry.from_wire(item) for item in read_list(value, "wants", MAX_WANTS))
    check(len({entry.digest for entry in wants}) == len(wants), "wants repeat a model digest")
    return wants


def _counter_table(value: object, what: str) -> dict[str, int]:
    table = read_mapping(value, what, MAX_RECORDS)
    return {read_node_id(node_id, f"{what} node id"): read_counter(count, f"{what} value")
            for node_id, count in table.items()}
