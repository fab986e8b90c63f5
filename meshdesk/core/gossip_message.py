"""The gossip message, version 1: what one node sends another each round (`core.membership`).

Wire format (a JSON object)::

    {"type": "gossip", "v": 1, "records": [record, ...], "heartbeats": {node_id: int},
     "generations": {node_id: int}, "removed": [node_id, ...], "revoked": [token_id, ...]}

Anything malformed raises `MembershipError` (one line).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshdesk.core.gossip_values import (
    MAX_ID_LENGTH,
    check,
    read_counter,
    read_list,
    read_mapping,
    read_node_id,
    read_text,
    require_fields,
)
from meshdesk.core.node_record import MAX_RECORDS, NodeRecord

MESSAGE_TYPE = "gossip"
PROTOCOL_VERSION = 1
MAX_TOKEN_ID_LENGTH = 128
MAX_SET_SIZE = 4096  # removed node ids, revoked token ids

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
        check(isinstance(data, dict), "a gossip message must be an object")
        require_fields(data, MESSAGE_FIELDS, "gossip message")
        check(isinstance(data["type"], str) and data["type"] == MESSAGE_TYPE, "not a gossip message")
        check(type(data["v"]) is int and data["v"] == PROTOCOL_VERSION, "unsupported gossip version")
        return cls(
            records=_records(data["records"]),
            heartbeats=_counter_table(data["heartbeats"], "heartbeats"),
            generations=_counter_table(data["generations"], "generations"),
            removed=_id_set(data["removed"], "removed", MAX_ID_LENGTH),
            revoked=_id_set(data["revoked"], "revoked", MAX_TOKEN_ID_LENGTH),
        )


def _records(value: object) -> tuple[NodeRecord, ...]:
    records = tuple(NodeRecord.from_wire(item) for item in read_list(value, "records", MAX_RECORDS))
    check(len({record.node_id for record in records}) == len(records), "records repeat a node id")
    return records


def _counter_table(value: object, what: str) -> dict[str, int]:
    table = read_mapping(value, what, MAX_RECORDS)
    return {read_node_id(node_id, f"{what} node id"): read_counter(count, f"{what} value")
            for node_id, count in table.items()}


def _id_set(value: object, what: str, max_length: int) -> frozenset[str]:
    items = read_list(value, what, MAX_SET_SIZE)
    return frozenset(read_text(item, f"{what} id", max_length, empty_ok=False) for item in items)
