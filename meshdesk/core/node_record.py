"""What one node tells the mesh about itself: the record that gossip spreads (`core.membership`).

Wire format (a JSON object)::

    {"node_id": str, "name": str, "addresses": [[host, port], ...], "capacity_bytes": int,
     "models": [model advert, ...], "serving": digest or null, "role": str, "versions": {...},
     "rtt_ms": {node_id: float}, "public_key": hex, "generation": int, "leaving": bool,
     "layer_space_bytes": int, "relayed_addresses": [[host, port], ...],
     "relays": [[host, port], ...], "signature": hex}

`layer_space_bytes` is the disk this node can give to layers of models it has no file of (a
split member's layer cache, `node.layer_member`); a record without it reads as 0.

`relayed_addresses` are where the node is reachable through a relay (`core.relay_protocol`),
dialled after its own `addresses`; `relays` are the relays it uses or runs, which members
behind routers may register at too. A record without them has none.

Model adverts are `core.model_advert`; `versions` is opaque JSON, compared by the handshake.

A record is signed by the node it describes: `signature` is its Ed25519 signature over
`signing_bytes` (a domain tag, then the canonical JSON of every other field), and
`check_signed` accepts it only when `public_key` derives to `node_id` (`core.identity`) and
the signature holds. Only the owner of a key can speak for its id.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from meshdesk.core.errors import Fault
from meshdesk.core.identity import PUBLIC_KEY_LENGTH, node_id_for

from meshdesk.core.gossip_values import (
    MembershipError,
    check,
    read_counter,
    read_flag,
    read_json_object,
    read_list,
    read_mapping,
    read_node_id,
    read_number,
    read_text,
    require_fields,
)
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.states import ROLES


MAX_RECORDS = 1024  # per message, and records held (own included)
MAX_NAME_LENGTH = 256
MAX_HOST_LENGTH = 253
MAX_ADDRESSES = 16
MAX_RELAYS = 4
MAX_MODELS = 256
SIGNATURE_LENGTH = 64  # raw Ed25519
_SIGNING_DOMAIN = b"meshdesk/1 node record\0"


@dataclass(frozen=True)
class NodeRecord:
    """What one node tells the mesh about itself. Validated and normalised on construction;
    `versions` is opaque JSON, `rtt_ms` maps peer ids to this node's round trip times. Treat
    the dicts inside as read-only."""

    node_id: str
    name: str
    addresses: tuple[tuple[str, int], ...]
    capacity_bytes: int
    models: tuple[ModelAdvert, ...]
    serving: str | None  # the digest of the model this node was asked to serve
    role: str
    versions: dict
    rtt_ms: dict
    public_key: str
    generation: int
    leaving: bool = False
    layer_space_bytes: int = 0  # room for a layer cache of models not on this disk
    relayed_addresses: tuple[tuple[str, int], ...] = ()
    relays: tuple[tuple[str, int], ...] = ()
    signature: str = ""  # hex; empty until `signed`

    def __post_init__(self) -> None:
        for name, value in _validated_fields(self).items():
            object.__setattr__(self, name, value)

    def to_wire(self) -> dict:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "addresses": [[host, port] for host, port in self.addresses],
            "capacity_bytes": self.capacity_bytes,
            "models": [model.to_wire() for model in self.models],
            "serving": self.serving,
            "role": self.role,
            "versions": copy.deepcopy(self.versions),
            "rtt_ms": dict(self.rtt_ms),
            "public_key": self.public_key,
            "generation": self.generation,
            "leaving": self.leaving,
            "layer_space_bytes": self.layer_space_bytes,
            "relayed_addresses": [[host, port] for host, port in self.relayed_addresses],
            "relays": [[host, port] for host, port in self.relays],
            "signature": self.signature,
        }

    @classmethod
    def from_wire(cls, data: object) -> NodeRecord:
        check(isinstance(data, dict), "a node record must be an object")
        data = {"layer_space_bytes": 0, "relayed_addresses": (), "relays": (), **data}  # optional
        require_fields(data, RECORD_FIELDS, "node record")
        models = read_list(data["models"], "models", MAX_MODELS)
        return cls(**{**data, "models": tuple(ModelAdvert.from_wire(model) for model in models)})


RECORD_FIELDS = frozenset(field.name for field in fields(NodeRecord))


def signing_bytes(record: NodeRecord) -> bytes:
    """What the owner signs: every field but the signature, as canonical JSON."""
    wire = record.to_wire()
    del wire["signature"]
    return _SIGNING_DOMAIN + json.dumps(wire, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def signed(record: NodeRecord, sign: Callable[[bytes], bytes]) -> NodeRecord:
    return replace(record, signature=sign(signing_bytes(record)).hex())


def check_signed(record: NodeRecord, verify: Callable[[bytes, bytes, bytes], bool]) -> None:
    """Raises MembershipError (Fault.UNAUTHENTICATED) unless the record's key derives to its id
    and signed it."""
    key, signature = _hex(record.public_key, PUBLIC_KEY_LENGTH), _hex(record.signature, SIGNATURE_LENGTH)
    if key is None or node_id_for(key) != record.node_id:
        raise MembershipError(f"the record for {record.node_id} carries a key that is not its own",
                              Fault.UNAUTHENTICATED)
    if signature is None or not verify(key, signing_bytes(record), signature):
        raise MembershipError(f"the record for {record.node_id} is not signed by its node", Fault.UNAUTHENTICATED)


def _hex(text: str, length: int) -> bytes | None:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        return None
    return value if len(value) == length and value.hex() == text else None  # one spelling only


def _validated_fields(record: NodeRecord) -> dict:
    check(isinstance(record.role, str) and record.role in ROLES, f"role must be one of {', '.join(ROLES)}")
    read_flag(record.leaving, "leaving")
    serving = record.serving
    return {
        "node_id": read_node_id(record.node_id),
        "name": read_text(record.name, "name", MAX_NAME_LENGTH),
        "addresses": _addresses(record.addresses, "addresses", MAX_ADDRESSES),
        "capacity_bytes": read_counter(record.capacity_bytes, "capacity_bytes"),
        "models": _models(record.models),
        "serving": None if serving is None else read_text(serving, "serving", empty_ok=False),
        "versions": read_json_object(record.versions, "versions"),
        "rtt_ms": _rtt_table(record.rtt_ms),
        "public_key": read_text(record.public_key, "public_key"),
        "generation": read_counter(record.generation, "generation"),
        "layer_space_bytes": read_counter(record.layer_space_bytes, "layer_space_bytes"),
        "relayed_addresses": _addresses(record.relayed_addresses, "relayed_addresses", MAX_RELAYS),
        "relays": _addresses(record.relays, "relays", MAX_RELAYS),
        "signature": read_text(record.signature, "signature", 2 * SIGNATURE_LENGTH),
    }


def _models(value: object) -> tuple[ModelAdvert, ...]:
    models = tuple(read_list(value, "models", MAX_MODELS))
    if not all(isinstance(model, ModelAdvert) for model in models):
        raise MembershipError("models must hold model adverts")
    return models


def _addresses(value: object, name: str, limit: int) -> tuple[tuple[str, int], ...]:
    return tuple(_address(item) for item in read_list(value, name, limit))


def _address(value: object) -> tuple[str, int]:
    check(isinstance(value, (list, tuple)) and len(value) == 2, "each address must be a [host, port] pair")
    host, port = value
    read_text(host, "address host", MAX_HOST_LENGTH, empty_ok=False)
    check(type(port) is int and 1 <= port <= 65535, "address port is out of range")
    return (host, port)


def _rtt_table(value: object) -> dict[str, float]:
    table = read_mapping(value, "rtt_ms", MAX_RECORDS)
    return {read_node_id(peer, "rtt_ms peer id"): read_number(rtt, "rtt_ms value") for peer, rtt in table.items()}
