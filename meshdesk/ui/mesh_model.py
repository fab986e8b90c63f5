"""What the Mesh view and the tray show, computed from a status snapshot by pure functions.

A view model: Qt-free (tests/test_layering.py checks it), so the views stay thin and these
functions are tested without a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from meshdesk.core.planning import Plan, PlanMember
from meshdesk.core.status import PeerStatus, StatusSnapshot
from meshdesk.core.states import ModelState, PlanState, Role
from meshdesk.ui.text import DASH, byte_size, gigabytes, layer_range, milliseconds, share_percent

MINIMUM_SEGMENT = 0.08  # a node offering nothing (a client) still gets a visible segment
STATE_NOTES = {ModelState.REMOTE: "served by another node", ModelState.WAITING: "waiting for capacity"}


class TrayState(StrEnum):
    """The one word the tray icon, its tooltip and the window title show for the whole node."""

    READY = "ready"
    LOADING = "loading"
    FAILED = "failed"
    NO_MESH = "no-mesh"


@dataclass(frozen=True)
class ClusterSegment:
    node_id: str
    name: str
    role: Role
    capacity_bytes: int
    share: str
    layers: str
    rtt: str
    is_self: bool = False
    is_host: bool = False

    def label_lines(self) -> list[str]:
        return [self.name + (" (you)" if self.is_self else ""), f"{self.role} · {self.share}",
                f"{gigabytes(self.capacity_bytes)} · {self.rtt}"]


@dataclass(frozen=True)
class MeshSummary:
    mesh: str
    models: str
    draft: str
    api: str
    capacity: str
    traffic: str = DASH
    layers: str = DASH  # "receiving layers: X of Y MB", or why this node takes none
    speculation: str = DASH  # "n-gram, 62% accepted, 2.4 tokens/pass, 2.4 tokens/round trip"
    plans: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def members_by_id(snapshot: StatusSnapshot) -> dict[str, PlanMember]:
    """Each plan member's entry, keyed by node id (a node serves one model, so one plan)."""
    found: dict[str, PlanMember] = {}
    for plan in snapshot.plans:
        for member in plan.members:
            found.setdefault(member.node_id, member)
    return found


def host_ids(snapshot: StatusSnapshot) -> set[str]:
    hosts = {plan.host for plan in snapshot.plans if plan.host is not None}
    hosts |= {peer.id for peer in snapshot.peers if peer.role == Role.HOST}
    if snapshot.node.role == Role.HOST:
        hosts.add(snapshot.node.id)
    return hosts


def own_segment(snapshot: StatusSnapshot, members: dict[str, PlanMember], hosts: set[str]) -> ClusterSegment:
    node = snapshot.node
    member = members.get(node.id)
    return ClusterSegment(node.id, node.name or DASH, node.role, snapshot.offer.capacity_bytes,
                          member_share(member), member_layers(member), "this node",
                          is_self=True, is_host=node.id in hosts)


def peer_segment(peer: PeerStatus, members: dict[str, PlanMember], hosts: set[str]) -> ClusterSegment:
    member = members.get(peer.id)
    return ClusterSegment(peer.id, peer.name or DASH, peer.role, peer.capacity_bytes,
                          member_share(member), member_layers(member), milliseconds(peer.rtt_ms),
                          is_host=peer.id in hosts)


def member_share(member: PlanMember | None) -> str:
    return DASH if member is None else share_percent(member.share)


def member_layers(member: PlanMember | None) -> str:
    return DASH if member is None else layer_range(member.layers)


def cluster_segments(snapshot: StatusSnapshot) -> list[ClusterSegment]:
    """One segment per node, this one first, then peers by capacity (largest first)."""
    members, hosts = members_by_id(snapshot), host_ids(snapshot)
    peers = sorted(snapshot.peers, key=lambda peer: -peer.capacity_bytes)
    return [own_segment(snapshot, members, hosts)] + [peer_segment(p, members, hosts) for p in peers]


def proportions(capacities: list[int], minimum: float = MINIMUM_SEGMENT) -> list[float]:
    """Fractions of the bar by capacity, each at least `minimum`; they sum to 1."""
    if not capacities:
        return []
    total = sum(max(0, c) for c in capacities)
    raw = [max(0, c) / total if total else 1 / len(capacities) for c in capacities]
    floored = [max(minimum, fraction) for fraction in raw]
    scale = sum(floored)
    return [fraction / scale for fraction in floored]


def plan_line(plan: Plan, names: dict[str, str]) -> str:
    members = [names.get(node_id, node_id[:8]) for node_id in plan.member_ids()]
    host = DASH if plan.host is None else names.get(plan.host, plan.host)
    spread = f" split over {', '.join(members)}" if len(members) > 1 else ""
    return f"{plan.model} on {host}{spread} ({plan.state})"


def waiting_reasons(snapshot: StatusSnapshot) -> list[str]:
    return [f"{plan.model}: {plan.waiting_reason}" for plan in snapshot.plans if plan.waiting_reason]


def node_names(snapshot: StatusSnapshot) -> dict[str, str]:
    names = {peer.id: peer.name for peer in snapshot.peers}
    names[snapshot.node.id] = snapshot.node.name
    return names


def served_models_line(snapshot: StatusSnapshot) -> str:
    if not snapshot.models:
        return "none"
    return ", ".join(f"{model.id} ({STATE_NOTES.get(model.state, model.state)})" for model in snapshot.models)


def draft_line(snapshot: StatusSnapshot) -> str:
    return ", ".join(model.draft for model in snapshot.models if model.draft) or DASH


SPECULATION_NAMES = {"ngram": "n-gram", "draft": "draft model"}


def speculation_text(speculative: dict | None) -> str | None:
    """One model host's speculation, from its status counts; None when it does not speculate."""
    if not speculative:
        return None
    mode = speculative.get("mode")
    if mode not in SPECULATION_NAMES:
        return f"off ({speculative['error']})" if speculative.get("error") else None
    parts = [SPECULATION_NAMES[mode]]
    rate, per_pass = speculative.get("acceptance_rate"), speculative.get("tokens_per_step")
    per_round_trip = speculative.get("tokens_per_round_trip")
    if isinstance(rate, (int, float)):
        parts.append(f"{rate:.0%} accepted")
    if isinstance(per_pass, (int, float)):
        parts.append(f"{per_pass:.1f} tokens/pass")
    if isinstance(per_round_trip, (int, float)):
        parts.append(f"{per_round_trip:.1f} tokens/round trip")
    return ", ".join(parts) if len(parts) > 1 else f"{parts[0]}, nothing generated yet"


def speculation_line(snapshot: StatusSnapshot) -> str:
    lines = [(model.id, speculation_text(model.speculative)) for model in snapshot.models]
    lines = [(model_id, text) for model_id, text in lines if text]
    if len(lines) == 1:
        return lines[0][1]
    return "\n".join(f"{model_id}: {text}" for model_id, text in lines) or DASH


def api_line(snapshot: StatusSnapshot) -> str:
    port = snapshot.api_port
    return f"http://127.0.0.1:{port}/v1" if port else "starting…"


def mesh_line(snapshot: StatusSnapshot) -> str:
    mesh = snapshot.mesh
    if mesh is None:
        return "not in a mesh yet"
    if mesh.removed_from_mesh:
        return f"removed from mesh {mesh.id}"
    return f"{mesh.id} · {mesh.members} members"


def refusal_lines(snapshot: StatusSnapshot) -> list[str]:
    return [f"{refusal.address}: {refusal.reason}" for refusal in snapshot.refusals]


def mesh_summary(snapshot: StatusSnapshot) -> MeshSummary:
    names = node_names(snapshot)
    total = sum(segment.capacity_bytes for segment in cluster_segments(snapshot))
    return MeshSummary(mesh=mesh_line(snapshot), models=served_models_line(snapshot),
                       draft=draft_line(snapshot), api=api_line(snapshot), capacity=gigabytes(total),
                       traffic=traffic_line(snapshot), layers=layers_line(snapshot),
                       speculation=speculation_line(snapshot),
                       plans=[plan_line(plan, names) for plan in snapshot.plans],
                       waiting=waiting_reasons(snapshot), refusals=refusal_lines(snapshot))


def tray_state(snapshot: StatusSnapshot) -> TrayState:
    """Failed when a model host here failed; loading while a model loads or waits for capacity;
    ready when a model answers here or through another node, or (serving nothing) when there
    are peers to ask; no mesh otherwise."""
    states = {model.state for model in snapshot.models}
    if ModelState.FAILED in states:
        return TrayState.FAILED
    waiting_plan = any(plan.state == PlanState.WAITING for plan in snapshot.plans)
    if states & {ModelState.LOADING, ModelState.WAITING} or waiting_plan:
        return TrayState.LOADING
    if states & {ModelState.READY, ModelState.REMOTE}:
        return TrayState.READY
    return TrayState.READY if snapshot.in_mesh and snapshot.peers else TrayState.NO_MESH


def traffic_line(snapshot: StatusSnapshot) -> str:
    traffic = snapshot.traffic
    return (f"weights sent {byte_size(traffic.weights_sent_bytes)}, "
            f"by reference {byte_size(traffic.weights_referenced_bytes)}, "
            f"activations {byte_size(traffic.activations_bytes)}")


def layers_line(snapshot: StatusSnapshot) -> str:
    """A split member's own layers of a model it has no file of: while they arrive, when all
    arrived, or why it cannot take any (then it is a lite member)."""
    layers = snapshot.layers
    if layers.problem:
        return layers.problem
    if not layers.missing_bytes:
        return DASH
    mb = 1024 ** 2
    if layers.receiving:
        return f"receiving layers: {layers.received_bytes / mb:.0f} of {layers.missing_bytes / mb:.0f} MB"
    return f"received its layers of {layers.model}: {layers.missing_bytes / mb:.0f} MB, kept for later loads"
