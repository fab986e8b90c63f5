"""A node's status snapshot: what `/api/status` shows and the desktop's views draw.

`Node.status()` builds one `StatusSnapshot` of frozen values; `to_wire()` is the JSON of
`/api/status`, field for field as it has always been, and `StatusSnapshot.from_wire()` reads that
JSON back (raising `SnapshotError`, a ValueError). The views read the typed fields; nothing in a
snapshot is optional except where the node really may not know yet (`api_port`, `mesh`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from meshdesk.core import snapshot_fields as read
from meshdesk.core.download_choice import DownloadStatus
from meshdesk.core.mesh_snapshot import MeshInfo, MeshStatus, PeerStatus, Refusal
from meshdesk.core.planning import Plan, PlanMember
from meshdesk.core.snapshot_fields import SnapshotError
from meshdesk.core.states import ModelState, PlanState, Role

__all__ = ["LayersStatus", "MeshInfo", "ModelStatus", "NodeInfo", "OfferStatus", "PeerStatus", "Refusal",
           "SecretsNote", "SnapshotError", "StatusSnapshot", "TrafficStatus", "activity_counts", "generating", "layer_spans",
           "plan_from_wire"]


@dataclass(frozen=True)
class NodeInfo:
    id: str
    name: str
    home: str     # the node's data folder
    version: str
    role: Role
    # Where peers see this node from (`core.reachability.Observed.to_wire`: address, direction,
    # reporters, advertised), most reporters first; left out of the wire when empty. Read-only.
    observed: tuple[dict, ...] = ()
    # The relays this node uses ({"relay": "host:port", "address": "host:port" or None, the
    # relayed address while registered}) and, as {"serving": port}, the one it runs. Read-only.
    relays: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))

    def to_wire(self) -> dict:
        wire = {"id": self.id, "name": self.name, "home": self.home, "version": self.version,
                "role": self.role.value}
        if self.observed:  # left out until a peer has reported one
            wire["observed"] = copy.deepcopy(list(self.observed))
        if self.relays:
            wire["relays"] = copy.deepcopy(list(self.relays))
        return wire

    @classmethod
    def from_wire(cls, data: object, what: str = "node") -> NodeInfo:
        data = read.section(data, what)
        observed, relays = data.get("observed", []), data.get("relays", [])
        for name, entries in (("observed", observed), ("relays", relays)):
            if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
                raise SnapshotError(f"{what}: {name} must be a list of objects")
        return cls(read.text(data, "id", what), read.text(data, "name", what),
                   read.text(data, "home", what), read.text(data, "version", what),
                   read.state(data, "role", Role, what), tuple(copy.deepcopy(observed)),
                   tuple(copy.deepcopy(relays)))


@dataclass(frozen=True)
class ModelStatus:
    """One model this node serves or routes to."""

    id: str
    path: str  # the model file here; "" when another node hosts it
    state: ModelState
    error: str | None = None  # why it failed, or what it waits for
    pid: int | None = None    # the model host child, for diagnostics
    requests: int = 0         # generations this node's model host has answered
    draft: str | None = None  # the speculative-decoding draft's file name, when one runs
    # The model host's cumulative speculative-decoding counts (proposed, accepted, steps,
    # generated, backed_off) with "mode" ("draft" or "ngram"), "acceptance_rate" (accepted /
    # proposed tokens), "tokens_per_step" (tokens per main-model pass) and
    # "tokens_per_round_trip" (tokens per tunnel round trip; None unless split); {"error"} when
    # a draft could not load and nothing speculates; None when speculation is off. Read-only.
    speculative: dict | None = None
    # Tokens of context its host gives it: this node's model host's own, or the advert's trained
    # context capped at the mesh's (what a remote host plans for); None when unknown.
    context: int | None = None
    generating: int = 0  # answers its model host is decoding right now: its active sequences
    queued: int = 0      # answers waiting for one of them, in arrival order
    parallel: int | None = None  # the sequences its host decodes at once; None unless hosted here

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", ModelState(self.state))

    def to_wire(self) -> dict:
        return {"id": self.id, "state": self.state.value, "path": self.path, "error": self.error,
                "pid": self.pid, "requests": self.requests, "draft": self.draft,
                "speculative": copy.deepcopy(self.speculative),
                **({} if self.context is None else {"context": self.context}),  # left out when unknown
                **({"generating": self.generating} if self.generating else {}),  # left out when idle
                **({"queued": self.queued} if self.queued else {}),
                **({} if self.parallel is None else {"parallel": self.parallel})}

    @classmethod
    def from_wire(cls, data: object, what: str = "model") -> ModelStatus:
        data = read.section(data, what)
        speculative = read.field(data, "speculative", (dict, type(None)), what)
        return cls(read.text(data, "id", what), read.text(data, "path", what),
                   read.state(data, "state", ModelState, what), read.optional_text(data, "error", what),
                   read.optional_whole(data, "pid", what), read.whole(data, "requests", what),
                   read.optional_text(data, "draft", what), copy.deepcopy(speculative),
                   read.optional_whole(data, "context", what) if "context" in data else None,
                   read.whole(data, "generating", what) if "generating" in data else 0,
                   read.whole(data, "queued", what) if "queued" in data else 0,
                   read.optional_whole(data, "parallel", what) if "parallel" in data else None)


@dataclass(frozen=True)
class TrafficStatus:
    """Bytes that crossed the data plane for split inference since the node started."""

    weights_sent_bytes: int = 0
    weights_referenced_bytes: int = 0  # weights the far side read from its own copy instead
    activations_bytes: int = 0
    round_trips: int = 0  # times this host waited on a remote member (`node.rpc_tunnel.TurnCounter`)

    def to_wire(self) -> dict:
        return {"weights_sent_bytes": self.weights_sent_bytes,
                "weights_referenced_bytes": self.weights_referenced_bytes,
                "activations_bytes": self.activations_bytes,
                "round_trips": self.round_trips}

    @classmethod
    def from_wire(cls, data: object, what: str = "traffic") -> TrafficStatus:
        data = read.section(data, what)
        return cls(read.whole(data, "weights_sent_bytes", what),
                   read.whole(data, "weights_referenced_bytes", what),
                   read.whole(data, "activations_bytes", what),
                   read.whole(data, "round_trips", what) if "round_trips" in data else 0)


@dataclass(frozen=True)
class LayersStatus:
    """A split member's layers of a model it has no file of: "receiving layers: X of Y MB"
    while they arrive (Y: what its share lacked at the load), or why it cannot take any."""

    model: str = ""
    received_bytes: int = 0
    missing_bytes: int = 0
    problem: str | None = None  # e.g. no disk space for layers: a lite member

    @property
    def receiving(self) -> bool:
        return 0 < self.missing_bytes and self.received_bytes < self.missing_bytes

    def to_wire(self) -> dict:
        return {"model": self.model, "received_bytes": self.received_bytes,
                "missing_bytes": self.missing_bytes, "receiving": self.receiving, "problem": self.problem}

    @classmethod
    def from_wire(cls, data: object, what: str = "layers") -> LayersStatus:
        data = read.section(data, what)
        return cls(read.text(data, "model", what), read.whole(data, "received_bytes", what),
                   read.whole(data, "missing_bytes", what), read.optional_text(data, "problem", what))


@dataclass(frozen=True)
class OfferStatus:
    """What this node offers the mesh: measured, capped by the user, switched on or off."""

    measured_bytes: int
    cap_bytes: int | None
    donating: bool
    capacity_bytes: int  # what it advertises: 0 for a lite client or with donating off

    def to_wire(self) -> dict:
        return {"measured_bytes": self.measured_bytes, "cap_bytes": self.cap_bytes,
                "donating": self.donating, "capacity_bytes": self.capacity_bytes}

    @classmethod
    def from_wire(cls, data: object, what: str = "offer") -> OfferStatus:
        data = read.section(data, what)
        return cls(read.whole(data, "measured_bytes", what), read.optional_whole(data, "cap_bytes", what),
                   read.flag(data, "donating", what), read.whole(data, "capacity_bytes", what))


@dataclass(frozen=True)
class SecretsNote:
    """Where the node keeps its key and mesh secret, and a warning when not in an OS keyring."""

    backend: str
    warning: str | None = None

    def to_wire(self) -> dict:
        return {"backend": self.backend, "warning": self.warning}

    @classmethod
    def from_wire(cls, data: object, what: str = "secrets") -> SecretsNote | None:
        """None for `{}`: a node assembled without a secret store to describe."""
        data = read.section(data, what)
        if not data:
            return None
        return cls(read.text(data, "backend", what), read.optional_text(data, "warning", what))


def plan_to_wire(plan: Plan) -> dict:
    return plan.to_dict()


def plan_from_wire(data: object, what: str = "plan") -> Plan:
    data = read.section(data, what)
    return Plan(read.text(data, "model", what), read.optional_text(data, "host", what),
                read.state(data, "state", PlanState, what),
                read.listed(data, "members", _plan_member, what),
                read.optional_text(data, "waiting_reason", what))


def _plan_member(data: object, what: str) -> PlanMember:
    data = read.section(data, what)
    return PlanMember(read.text(data, "id", what), float(read.number(data, "share", what)),
                      read.whole(data, "layers", what))


@dataclass(frozen=True)
class StatusSnapshot:
    node: NodeInfo
    models: tuple[ModelStatus, ...]
    api_port: int | None  # None until the API listens
    plans: tuple[Plan, ...]
    traffic: TrafficStatus
    secrets: SecretsNote | None
    offer: OfferStatus
    wants: tuple[str, ...]  # ids of the model files this node asks the mesh to serve
    mesh: MeshInfo | None   # None until this node founds or joins a mesh
    peers: tuple[PeerStatus, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    layers: LayersStatus = LayersStatus()
    download: DownloadStatus | None = None  # the catalog model this node downloads to serve
    # A split host's remote members by id: the weights their tunnels sent whole so far (the
    # layers each receives while the model loads); empty elsewhere, and then left out of the JSON.
    layers_sent: dict[str, int] = field(default_factory=dict)

    @property
    def in_mesh(self) -> bool:
        return self.mesh is not None

    def to_wire(self) -> dict:
        return {
            "node": self.node.to_wire(),
            "models": [model.to_wire() for model in self.models],
            "api_port": self.api_port,
            "plans": [plan_to_wire(plan) for plan in self.plans],
            "traffic": self.traffic.to_wire(),
            "secrets": {} if self.secrets is None else self.secrets.to_wire(),
            "offer": self.offer.to_wire(),
            "wants": list(self.wants),
            **MeshStatus(self.mesh, self.peers, self.refusals).to_wire(),
            **({} if self.download is None else {"download": self.download.to_wire()}),
            "layers": self.layers.to_wire(),
            **({"layers_sent": dict(self.layers_sent)} if self.layers_sent else {}),
        }

    @classmethod
    def from_wire(cls, data: object) -> StatusSnapshot:
        data = read.section(data, "status")
        mesh = MeshStatus.from_wire(data)
        return cls(NodeInfo.from_wire(read.field(data, "node", dict, "status")),
                   read.listed(data, "models", ModelStatus.from_wire, "status"),
                   read.optional_whole(data, "api_port", "status"),
                   read.listed(data, "plans", plan_from_wire, "status"),
                   TrafficStatus.from_wire(read.field(data, "traffic", dict, "status")),
                   SecretsNote.from_wire(read.field(data, "secrets", dict, "status")),
                   OfferStatus.from_wire(read.field(data, "offer", dict, "status")),
                   read.listed(data, "wants", _want, "status"),
                   mesh.mesh, mesh.peers, mesh.refusals,
                   layers=LayersStatus.from_wire(data["layers"]) if "layers" in data else LayersStatus(),
                   download=DownloadStatus.from_wire(data.get("download")),
                   layers_sent=_layers_sent(data.get("layers_sent", {})))


def layer_spans(plan: Plan) -> dict[str, tuple[int, int]]:
    """Each member's layers as (first, last), 0-based: llama.cpp gives a tensor split's devices
    consecutive layers in device order, and the plan lists its members in that order."""
    spans, first = {}, 0
    for member in plan.members:
        if member.layers > 0:
            spans[member.node_id] = (first, first + member.layers - 1)
            first += member.layers
    return spans


def activity_counts(snapshot: StatusSnapshot) -> tuple[int, ...]:
    """Counters that move while this node computes or exchanges for a generation: data-plane
    bytes and round trips, and answers started. Two snapshots with different counts mean this
    node was busy in between; `generating` says it is busy now."""
    traffic = snapshot.traffic
    return traffic.activations_bytes, traffic.round_trips, sum(model.requests for model in snapshot.models)


def generating(snapshot: StatusSnapshot) -> bool:
    return any(model.generating for model in snapshot.models)


def _layers_sent(data: object) -> dict[str, int]:
    if not isinstance(data, dict) or not all(isinstance(key, str) and type(value) is int and value >= 0
                                             for key, value in data.items()):
        raise SnapshotError("layers_sent must map member ids to byte counts")
    return dict(data)


def _want(item: object, what: str) -> str:
    if not isinstance(item, str):
        raise SnapshotError(f"{what} must be a model id")
    return item
