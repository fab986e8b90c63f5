"""The mesh part of a status snapshot: the mesh this node is in, its peers, refused peers.

Frozen values, built by `node.mesh_status` and carried by `core.status.StatusSnapshot`; each
`to_wire()` is the JSON `/api/status` has always shown, `from_wire()` reads it back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field as dataclass_field

from meshdesk.core import snapshot_fields as read
from meshdesk.core.states import Liveness, Role


@dataclass(frozen=True)
class MeshInfo:
    id: str
    members: int  # alive members, this node included
    port: int | None
    removed_from_mesh: bool

    def to_wire(self) -> dict:
        return {"id": self.id, "members": self.members, "port": self.port,
                "removed_from_mesh": self.removed_from_mesh}

    @classmethod
    def from_wire(cls, data: object, what: str = "mesh") -> MeshInfo:
        data = read.section(data, what)
        return cls(read.text(data, "id", what), read.whole(data, "members", what),
                   read.optional_whole(data, "port", what), read.flag(data, "removed_from_mesh", what))


@dataclass(frozen=True)
class ModelFile:
    """A model file on a peer's disk, as far as the views show it."""

    name: str              # the file name, e.g. "Qwen2.5-7B-Instruct-Q4_K_M.gguf"
    size_bytes: int | None


@dataclass(frozen=True)
class PeerStatus:
    id: str
    name: str
    role: Role
    capacity_bytes: int
    rtt_ms: float | None  # our measured round trip, rounded to 0.01 ms; None until measured
    # The peer's model adverts in their wire form (as gossip carries them), read-only.
    models: tuple[dict, ...]
    state: Liveness
    last_seen_s: float
    linked: bool          # whether we hold a link to it (else we hear of it through others)
    addresses: tuple[tuple[str, int], ...]
    versions: dict = dataclass_field(default_factory=dict)  # the peer's gossiped versions, read-only
    relayed: bool = False  # our link to it goes through a relay

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "state", Liveness(self.state))

    def model_files(self) -> tuple[ModelFile, ...]:
        """The files its adverts name; older nodes gossiped plain names."""
        return tuple(_model_file(advert) for advert in self.models)

    def to_wire(self) -> dict:
        wire = {"id": self.id, "name": self.name, "role": self.role.value,
                "capacity_bytes": self.capacity_bytes, "rtt_ms": self.rtt_ms,
                "models": copy.deepcopy(list(self.models)), "state": self.state.value,
                "last_seen_s": self.last_seen_s, "linked": self.linked,
                "addresses": [[host, port] for host, port in self.addresses],
                "versions": copy.deepcopy(self.versions)}
        if self.relayed:  # left out for a direct link, as it always was
            wire["relayed"] = True
        return wire

    @classmethod
    def from_wire(cls, data: object, what: str = "peer") -> PeerStatus:
        data = read.section(data, what)
        return cls(read.text(data, "id", what), read.text(data, "name", what),
                   read.state(data, "role", Role, what), read.whole(data, "capacity_bytes", what),
                   read.optional_number(data, "rtt_ms", what),
                   tuple(copy.deepcopy(read.field(data, "models", list, what))),
                   read.state(data, "state", Liveness, what), read.number(data, "last_seen_s", what),
                   read.flag(data, "linked", what), read.listed(data, "addresses", _address, what),
                   read.opaque_object(data, "versions", what), data.get("relayed") is True)


def _model_file(advert: object) -> ModelFile:
    if not isinstance(advert, dict):
        return ModelFile(str(advert), None)
    size = advert.get("size")
    return ModelFile(str(advert.get("name", "")), size if type(size) is int else None)


def _address(item: object, what: str) -> tuple[str, int]:
    if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
            or type(item[1]) is not int):
        raise read.SnapshotError(f"{what} must be [host, port]")
    return item[0], item[1]


@dataclass(frozen=True)
class Refusal:
    """A peer this node turned away, and why (the last few are kept)."""

    address: str  # "host:port"
    reason: str
    at: int       # wall-clock seconds

    def to_wire(self) -> dict:
        return {"address": self.address, "reason": self.reason, "at": self.at}

    @classmethod
    def from_wire(cls, data: object, what: str = "refusal") -> Refusal:
        data = read.section(data, what)
        return cls(read.text(data, "address", what), read.text(data, "reason", what),
                   read.whole(data, "at", what))


@dataclass(frozen=True)
class MeshStatus:
    """`mesh` is None until this node founds or joins a mesh."""

    mesh: MeshInfo | None
    peers: tuple[PeerStatus, ...] = ()
    refusals: tuple[Refusal, ...] = ()

    def to_wire(self) -> dict:
        return {"mesh": None if self.mesh is None else self.mesh.to_wire(),
                "peers": [peer.to_wire() for peer in self.peers],
                "refusals": [refusal.to_wire() for refusal in self.refusals]}

    @classmethod
    def from_wire(cls, data: object, what: str = "status") -> MeshStatus:
        data = read.section(data, what)
        mesh = read.field(data, "mesh", (dict, type(None)), what)
        return cls(None if mesh is None else MeshInfo.from_wire(mesh),
                   read.listed(data, "peers", PeerStatus.from_wire, what),
                   read.listed(data, "refusals", Refusal.from_wire, what))
