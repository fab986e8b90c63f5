"""What the Mesh view's details and the tray show, computed from a status snapshot by pure functions.

A view model: Qt-free (tests/test_layering.py checks it), so the views stay thin and these
functions are tested without a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from meshdesk.core.planning import Plan
from meshdesk.core.status import ModelStatus, StatusSnapshot
from meshdesk.core.states import ModelState, PlanState
from meshdesk.ui.mesh_segments import cluster_segments, proportions  # noqa: F401 (proportions: its home)
from meshdesk.ui.text import DASH, byte_size, gigabytes
STATE_NOTES = {ModelState.REMOTE: "served by another node", ModelState.WAITING: "waiting for capacity"}


class TrayState(StrEnum):
    """The one word the tray icon, its tooltip and the window title show for the whole node."""

    READY = "ready"
    LOADING = "loading"
    FAILED = "failed"
    NO_MESH = "no-mesh"


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
    headline: str = DASH  # the picture's title: machines, pooled capacity, what they serve


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
    return ", ".join(f"{model.id} ({model_state_text(model)})" for model in snapshot.models)


def model_state_text(model: ModelStatus) -> str:
    """"ready", or while it answers "ready · answering 3 of 8 · 2 waiting"."""
    return " · ".join([STATE_NOTES.get(model.state, model.state.value), *load_parts(model)])


def load_parts(model: ModelStatus) -> list[str]:
    """What this node's host of `model` is doing: its sequences in use of all, and the queue."""
    if not model.generating and not model.queued:
        return []
    cap = f" of {model.parallel}" if model.parallel else ""
    waiting = [f"{model.queued} waiting"] if model.queued else []
    return [f"answering {model.generating}{cap}", *waiting]


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


def headline(snapshot: StatusSnapshot, pooled_bytes: int) -> str:
    """"3 machines · 48 GB pooled · serving Qwen… split over 3 of them", for a friend at a glance."""
    mesh = snapshot.mesh
    if mesh is None:
        return "Not in a mesh yet: start one, or join a friend's from the Join tab."
    if mesh.removed_from_mesh:
        return f"This computer was removed from mesh {mesh.id}."
    machines = 1 + len(snapshot.peers)
    parts = [f"{machines} machine{'s' if machines != 1 else ''}", f"{gigabytes(pooled_bytes)} pooled"]
    for plan in snapshot.plans:
        if plan.state == PlanState.WAITING:
            parts.append(f"{plan.model} waits for capacity")
        elif len(plan.members) > 1:
            parts.append(f"serving {plan.model} split over {len(plan.members)} of them")
        else:
            parts.append(f"serving {plan.model}")
    return " · ".join(parts)


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
                       waiting=waiting_reasons(snapshot), refusals=refusal_lines(snapshot),
                       headline=headline(snapshot, total))


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
