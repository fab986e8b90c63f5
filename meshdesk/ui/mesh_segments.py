"""The Mesh view's picture: one segment per machine, as wide as what it offers, with its layers
of the served model, its round trip, where it is in joining, and whether it is busy now.

A Qt-free view model (tests/test_layering.py checks it): `cluster_segments` reads one status
snapshot; `ActivityWatch` compares snapshots in turn, since activity is counters that move.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from meshdesk.core.planning import Plan, PlanMember
from meshdesk.core.states import Liveness, ModelState, PlanState, Role
from meshdesk.core.status import PeerStatus, StatusSnapshot, activity_counts, generating, layer_spans
from meshdesk.ui.text import DASH, gigabytes, milliseconds, share_percent

MINIMUM_SEGMENT = 0.08  # a node offering nothing (a client) still gets a visible segment
# A machine stays marked busy this long after its counters last moved: the desktop looks about
# once a second while the Mesh tab shows, so a steady generation never flickers off between looks.
ACTIVE_HOLD_S = 2.5
MB = 1024 ** 2


class SegmentState(StrEnum):
    """Where a machine is, from joining to serving, as its segment says it."""

    NO_MESH = "not in a mesh yet"
    CONNECTING = "connecting"
    RECEIVING = "receiving layers"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STANDBY = "standing by"
    CLIENT = "lite client"
    LITE = "lite member"      # could not take layers (e.g. no disk space): serves the API only
    NOT_ANSWERING = "not answering"


MODEL_STATES = {ModelState.LOADING: SegmentState.LOADING, ModelState.WAITING: SegmentState.LOADING,
                ModelState.FAILED: SegmentState.FAILED, ModelState.READY: SegmentState.READY,
                ModelState.REMOTE: SegmentState.READY}


@dataclass(frozen=True)
class ClusterSegment:
    node_id: str
    name: str
    role: Role
    capacity_bytes: int
    share: str
    layers: str  # "layers 0–20" of the model its plan serves, or a dash
    rtt: str
    is_self: bool = False
    is_host: bool = False
    state: SegmentState = SegmentState.STANDBY
    progress: int | None = None  # percent of its layers received, while they arrive
    detail: str = ""             # e.g. "30 of 120 MB"
    active: bool = False         # computing or exchanging for a generation now

    def state_text(self) -> str:
        text = str(self.state) + ("" if self.progress is None else f" {self.progress}%")
        text += f" · {self.detail}" if self.detail else ""
        return ("● busy · " + text) if self.active else text

    def capacity_text(self) -> str:
        return gigabytes(self.capacity_bytes) if self.capacity_bytes else "0 GB"

    def row(self) -> tuple[str, ...]:
        """The machines table under the picture: every fact in full where a segment is narrow."""
        return (self.name + (" (you)" if self.is_self else ""), str(self.role), self.layers, self.share,
                self.capacity_text(), self.rtt, self.state_text())

    def label_lines(self) -> list[str]:
        part = "no layers" if self.layers == DASH else f"{self.layers} · {self.share}"
        return [self.name + (" (you)" if self.is_self else "") + f" · {self.role}", part,
                f"{self.capacity_text()} · {self.rtt}",
                self.state_text()]


def members_by_id(snapshot: StatusSnapshot) -> dict[str, tuple[Plan, PlanMember]]:
    """Each plan member's plan and entry, keyed by node id (a node serves one model, so one plan)."""
    found: dict[str, tuple[Plan, PlanMember]] = {}
    for plan in snapshot.plans:
        for member in plan.members:
            found.setdefault(member.node_id, (plan, member))
    return found


def host_ids(snapshot: StatusSnapshot) -> set[str]:
    hosts = {plan.host for plan in snapshot.plans if plan.host is not None}
    hosts |= {peer.id for peer in snapshot.peers if peer.role == Role.HOST}
    if snapshot.node.role == Role.HOST:
        hosts.add(snapshot.node.id)
    return hosts


def layers_text(plan: Plan | None, node_id: str) -> str:
    span = None if plan is None else layer_spans(plan).get(node_id)
    return DASH if span is None else f"layers {span[0]}–{span[1]}"


def share_text(entry: tuple[Plan, PlanMember] | None) -> str:
    return DASH if entry is None else share_percent(entry[1].share)


def plan_state(snapshot: StatusSnapshot, plan: Plan) -> SegmentState:
    """A plan's machines load while its model loads here (a split host waits for its members'
    layers); a model this node only lends layers to reads as ready."""
    states = {model.id: model.state for model in snapshot.models}
    if plan.state == PlanState.WAITING:
        return SegmentState.LOADING
    return MODEL_STATES.get(states.get(plan.model, ModelState.READY), SegmentState.READY)


def idle_state(role: Role, capacity_bytes: int) -> SegmentState:
    return SegmentState.CLIENT if role == Role.CLIENT or not capacity_bytes else SegmentState.STANDBY


def own_state(snapshot: StatusSnapshot, plan: Plan | None) -> tuple[SegmentState, int | None, str]:
    layers = snapshot.layers
    if snapshot.mesh is None:
        return SegmentState.NO_MESH, None, ""
    if layers.problem:
        return SegmentState.LITE, None, ""
    if layers.receiving:
        percent = min(99, layers.received_bytes * 100 // layers.missing_bytes)
        return (SegmentState.RECEIVING, percent,
                f"{layers.received_bytes / MB:.0f} of {layers.missing_bytes / MB:.0f} MB")
    if plan is None:
        return idle_state(snapshot.node.role, snapshot.offer.capacity_bytes), None, ""
    return plan_state(snapshot, plan), None, ""


def peer_state(snapshot: StatusSnapshot, peer: PeerStatus, plan: Plan | None) -> SegmentState:
    if peer.state != Liveness.ALIVE:
        return SegmentState.NOT_ANSWERING
    if not peer.linked or peer.rtt_ms is None:
        return SegmentState.CONNECTING
    if plan is None:
        return idle_state(peer.role, peer.capacity_bytes)
    state = plan_state(snapshot, plan)
    return SegmentState.RECEIVING if state == SegmentState.LOADING and snapshot.layers_sent.get(peer.id) else state


def own_segment(snapshot: StatusSnapshot, members: dict, hosts: set[str], busy: frozenset[str]) -> ClusterSegment:
    node = snapshot.node
    entry = members.get(node.id)
    plan = None if entry is None else entry[0]
    state, progress, detail = own_state(snapshot, plan)
    return ClusterSegment(node.id, node.name or DASH, node.role, snapshot.offer.capacity_bytes,
                          share_text(entry), layers_text(plan, node.id), "this node",
                          is_self=True, is_host=node.id in hosts, state=state, progress=progress,
                          detail=detail, active=node.id in busy)


def peer_segment(snapshot: StatusSnapshot, peer: PeerStatus, members: dict, hosts: set[str],
                 busy: frozenset[str]) -> ClusterSegment:
    entry = members.get(peer.id)
    plan = None if entry is None else entry[0]
    state = peer_state(snapshot, peer, plan)
    # This host knows what it sent a member, not what the member lacked: bytes, no percent.
    detail = f"{snapshot.layers_sent[peer.id] / MB:.0f} MB so far" if state == SegmentState.RECEIVING else ""
    return ClusterSegment(peer.id, peer.name or DASH, peer.role, peer.capacity_bytes,
                          share_text(entry), layers_text(plan, peer.id), link_text(peer),
                          is_host=peer.id in hosts, state=state, detail=detail, active=peer.id in busy)


def link_text(peer: PeerStatus) -> str:
    """The round trip, and whether it goes through a relay (slower, and worth knowing)."""
    return milliseconds(peer.rtt_ms) + (" via relay" if peer.relayed and peer.linked else "")


def cluster_segments(snapshot: StatusSnapshot, busy: frozenset[str] = frozenset()) -> list[ClusterSegment]:
    """One segment per node, this one first, then peers by capacity (largest first); `busy`
    names the nodes to mark active (`ActivityWatch`)."""
    members, hosts = members_by_id(snapshot), host_ids(snapshot)
    peers = sorted(snapshot.peers, key=lambda peer: -peer.capacity_bytes)
    return ([own_segment(snapshot, members, hosts, busy)]
            + [peer_segment(snapshot, peer, members, hosts, busy) for peer in peers])


def proportions(capacities: list[int], minimum: float = MINIMUM_SEGMENT) -> list[float]:
    """Fractions of the bar by capacity, each at least `minimum`; they sum to 1."""
    if not capacities:
        return []
    total = sum(max(0, c) for c in capacities)
    raw = [max(0, c) / total if total else 1 / len(capacities) for c in capacities]
    floored = [max(minimum, fraction) for fraction in raw]
    scale = sum(floored)
    return [fraction / scale for fraction in floored]


def partners(snapshot: StatusSnapshot) -> frozenset[str]:
    """This node and, when it takes part in a split, every machine of that split: a split's
    members compute each token in turn and exchange activations with its host."""
    own = snapshot.node.id
    for plan in snapshot.plans:
        ids = set(plan.member_ids()) | ({plan.host} if plan.host else set())
        if own in ids and len(plan.members) > 1:
            return frozenset(ids | {own})
    return frozenset({own})


class ActivityWatch:
    """Which machines are busy: this node's activity counters moved since the last snapshot,
    or an answer is being produced here, within the last `hold_s` seconds. The caller passes
    `now` (monotonic seconds), so tests drive time by hand."""

    def __init__(self, hold_s: float = ACTIVE_HOLD_S):
        self.hold_s = hold_s
        self.counts: tuple[int, ...] | None = None
        self.busy_at: float | None = None
        self.ids: frozenset[str] = frozenset()

    def see(self, snapshot: StatusSnapshot, now: float) -> frozenset[str]:
        counts = activity_counts(snapshot)
        # Counters only grow while a node runs: lower ones are a restarted node, not activity.
        moved = (self.counts is not None and counts != self.counts
                 and all(new >= old for new, old in zip(counts, self.counts)))
        self.counts = counts
        if moved or generating(snapshot):
            self.busy_at, self.ids = now, partners(snapshot)
        return self.busy(now)

    def busy(self, now: float) -> frozenset[str]:
        """The busy machines at `now`, without a new snapshot (the hold runs out with time)."""
        if self.busy_at is None or now - self.busy_at > self.hold_s:
            return frozenset()
        return self.ids
