"""What the Mesh view and the tray show, computed from a status snapshot by pure functions.

Snapshots grow over time (plans, roles, traffic, a catalog); every key is optional here and a
missing one reads as a dash, so these views work with older and newer nodes alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshdesk.ui.text import (DASH, byte_size, gigabytes, layer_range, milliseconds, share_percent,
                              text_or_dash)

MINIMUM_SEGMENT = 0.08  # a node offering nothing (a client) still gets a visible segment
READY, LOADING, FAILED, NO_MESH = "ready", "loading", "failed", "no-mesh"
WAITING, REMOTE = "waiting", "remote"
STATE_NOTES = {REMOTE: "served by another node", WAITING: "waiting for capacity"}


@dataclass(frozen=True)
class ClusterSegment:
    node_id: str
    name: str
    role: str
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
    plans: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def plans_of(snapshot: dict) -> list[dict]:
    plans = snapshot.get("plans")
    return [plan for plan in plans if isinstance(plan, dict)] if isinstance(plans, list) else []


def members_by_id(snapshot: dict) -> dict[str, dict]:
    """Each plan member's entry, keyed by node id (a node serves one model, so one plan)."""
    found: dict[str, dict] = {}
    for plan in plans_of(snapshot):
        for member in plan.get("members") or []:
            if isinstance(member, dict) and isinstance(member.get("id"), str):
                found.setdefault(member["id"], member)
    return found


def host_ids(snapshot: dict) -> set[str]:
    hosts = {plan["host"] for plan in plans_of(snapshot) if isinstance(plan.get("host"), str)}
    hosts |= {peer.get("id") for peer in peers_of(snapshot) if peer.get("role") == "host"}
    if own_role(snapshot) == "host":
        hosts.add(own_id(snapshot))
    return hosts


def peers_of(snapshot: dict) -> list[dict]:
    peers = snapshot.get("peers")
    return [peer for peer in peers if isinstance(peer, dict)] if isinstance(peers, list) else []


def own_id(snapshot: dict) -> str:
    return str((snapshot.get("node") or {}).get("id", ""))


def own_role(snapshot: dict) -> str:
    role = (snapshot.get("node") or {}).get("role")
    if isinstance(role, str):
        return role
    node_id = own_id(snapshot)
    for plan in plans_of(snapshot):
        if plan.get("host") == node_id:
            return "host"
    return "worker" if node_id in members_by_id(snapshot) else DASH


def own_segment(snapshot: dict, members: dict, hosts: set[str]) -> ClusterSegment:
    node = snapshot.get("node") or {}
    node_id = own_id(snapshot)
    member = members.get(node_id, {})
    capacity = (snapshot.get("offer") or {}).get("capacity_bytes")
    return ClusterSegment(node_id, text_or_dash(node.get("name")), own_role(snapshot),
                          capacity if isinstance(capacity, int) else 0,
                          share_percent(member.get("share")), layer_range(member.get("layers")),
                          "this node", is_self=True, is_host=node_id in hosts)


def peer_segment(peer: dict, members: dict, hosts: set[str]) -> ClusterSegment:
    node_id = str(peer.get("id", ""))
    member = members.get(node_id, {})
    capacity = peer.get("capacity_bytes")
    return ClusterSegment(node_id, text_or_dash(peer.get("name")), text_or_dash(peer.get("role")),
                          capacity if isinstance(capacity, int) else 0,
                          share_percent(member.get("share")), layer_range(member.get("layers")),
                          milliseconds(peer.get("rtt_ms")), is_host=node_id in hosts)


def cluster_segments(snapshot: dict) -> list[ClusterSegment]:
    """One segment per node, this one first, then peers by capacity (largest first)."""
    members, hosts = members_by_id(snapshot), host_ids(snapshot)
    peers = sorted(peers_of(snapshot), key=lambda peer: -(peer.get("capacity_bytes") or 0))
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


def plan_line(plan: dict, names: dict[str, str]) -> str:
    members = [names.get(m.get("id"), str(m.get("id", "?"))[:8]) for m in plan.get("members") or []
               if isinstance(m, dict)]
    host = names.get(plan.get("host"), text_or_dash(plan.get("host")))
    spread = f" split over {', '.join(members)}" if len(members) > 1 else ""
    return f"{text_or_dash(plan.get('model'))} on {host}{spread} ({text_or_dash(plan.get('state'))})"


def waiting_reasons(snapshot: dict) -> list[str]:
    return [f"{plan.get('model', DASH)}: {plan['waiting_reason']}" for plan in plans_of(snapshot)
            if plan.get("waiting_reason")]


def node_names(snapshot: dict) -> dict[str, str]:
    names = {peer.get("id"): str(peer.get("name", "?")) for peer in peers_of(snapshot)}
    names[own_id(snapshot)] = str((snapshot.get("node") or {}).get("name", "?"))
    return names


def served_models_line(snapshot: dict) -> str:
    models = [m for m in snapshot.get("models") or [] if isinstance(m, dict)]
    if not models:
        return "none"
    return ", ".join(f"{m.get('id', DASH)} ({STATE_NOTES.get(m.get('state'), m.get('state', DASH))})"
                     for m in models)


def draft_line(snapshot: dict) -> str:
    drafts = [entry.get("draft") for entry in [*(snapshot.get("models") or []), *plans_of(snapshot)]
              if isinstance(entry, dict) and entry.get("draft")]
    return ", ".join(str(d if not isinstance(d, dict) else d.get("id", DASH)) for d in drafts) or DASH


def api_line(snapshot: dict) -> str:
    port = snapshot.get("api_port")
    return f"http://127.0.0.1:{port}/v1" if port else "starting…"


def mesh_line(snapshot: dict) -> str:
    mesh = snapshot.get("mesh")
    if not isinstance(mesh, dict) or not mesh.get("id"):
        return "not in a mesh yet"
    if mesh.get("removed_from_mesh"):
        return f"removed from mesh {mesh['id']}"
    return f"{mesh['id']} · {mesh.get('members', DASH)} members"


def refusal_lines(snapshot: dict) -> list[str]:
    return [f"{r.get('address', DASH)}: {r.get('reason', DASH)}" for r in snapshot.get("refusals") or []
            if isinstance(r, dict)]


def mesh_summary(snapshot: dict) -> MeshSummary:
    names = node_names(snapshot)
    total = sum(segment.capacity_bytes for segment in cluster_segments(snapshot))
    return MeshSummary(mesh=mesh_line(snapshot), models=served_models_line(snapshot),
                       draft=draft_line(snapshot), api=api_line(snapshot), capacity=gigabytes(total),
                       traffic=traffic_line(snapshot),
                       plans=[plan_line(plan, names) for plan in plans_of(snapshot)],
                       waiting=waiting_reasons(snapshot), refusals=refusal_lines(snapshot))


def tray_state(snapshot: dict) -> str:
    """ready, loading, failed, or no-mesh (nothing served here and nobody to ask).

    Model states: loading, ready, failed (a host here), waiting (for capacity), remote (served
    by another node; requests are routed there)."""
    states = {m.get("state") for m in snapshot.get("models") or [] if isinstance(m, dict)}
    if FAILED in states:
        return FAILED
    if states & {LOADING, WAITING} or any(p.get("state") == WAITING for p in plans_of(snapshot)):
        return LOADING
    if states & {READY, REMOTE}:
        return READY
    in_mesh = isinstance(snapshot.get("mesh"), dict) and bool(peers_of(snapshot))
    return READY if in_mesh else NO_MESH


def traffic_line(snapshot: dict) -> str:
    traffic = snapshot.get("traffic")
    if not isinstance(traffic, dict):
        return DASH
    return (f"weights sent {byte_size(traffic.get('weights_sent_bytes'))}, "
            f"by reference {byte_size(traffic.get('weights_referenced_bytes'))}, "
            f"activations {byte_size(traffic.get('activations_bytes'))}")
