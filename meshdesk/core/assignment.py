"""Several models in one mesh: which node serves which model, and each model's plans (pure).

Each node serves one model. A node started with a model serves that one. A node that joined
without one is given a model the mesh wants: first one nobody serves yet, then the least served,
always among models it already has on disk (no download wait). A model that fits on one node
runs solo on every node serving it (independent replicas); only a model no single node can hold,
or one whose seeder asked for it, is split, by `core.planning` within its group.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshdesk.core.planning import SOLO, Candidate, ModelNeeds, Plan, PlanMember, needed_bytes, plan_model


@dataclass(frozen=True)
class MeshNode:
    node_id: str
    capacity_bytes: int
    models_on_disk: frozenset[str]   # digests
    serving: str | None              # the digest it was started with, if any
    rtt_ms: dict


@dataclass(frozen=True)
class WantedModel:
    digest: str
    needs: ModelNeeds
    force_split: bool = False
    manual_split: tuple[float, ...] | None = None


def assign(nodes: list[MeshNode], wanted: list[WantedModel]) -> dict[str, str]:
    """node id -> digest, for every node that serves a model."""
    digests = [model.digest for model in wanted]
    assigned = {node.node_id: node.serving for node in nodes
                if node.serving in digests and node.capacity_bytes > 0 and node.serving in node.models_on_disk}
    for node in sorted(nodes, key=lambda node: node.node_id):
        if node.node_id in assigned or node.capacity_bytes <= 0:
            continue
        choice = least_served(digests, assigned, node.models_on_disk)
        if choice is not None:
            assigned[node.node_id] = choice
    return assigned


def least_served(digests: list[str], assigned: dict[str, str], on_disk: frozenset[str]) -> str | None:
    """Among models on this disk: nobody serving it first, then fewest servers, then wanted order."""
    counts = {digest: list(assigned.values()).count(digest) for digest in digests if digest in on_disk}
    if not counts:
        return None
    return min(counts, key=lambda digest: (counts[digest], digests.index(digest)))


def plan_mesh(nodes: list[MeshNode], wanted: list[WantedModel]) -> dict[str, list[Plan]]:
    """digest -> the plans that serve it (several solo replicas, or one split/waiting plan)."""
    assigned = assign(nodes, wanted)
    return {model.digest: plan_group(model, [node for node in nodes if assigned.get(node.node_id) == model.digest])
            for model in wanted}


def plan_group(model: WantedModel, group: list[MeshNode]) -> list[Plan]:
    candidates = [Candidate(node.node_id, node.capacity_bytes, dict(node.rtt_ms)) for node in group]
    if not model.force_split:
        fitting = sorted((node for node in group if needed_bytes(model.needs) <= node.capacity_bytes),
                         key=lambda node: node.node_id)
        if fitting:
            return [solo(model.needs, node.node_id) for node in fitting]
    return [plan_model(model.needs, candidates, model.force_split, model.manual_split)]


def solo(needs: ModelNeeds, node_id: str) -> Plan:
    return Plan(needs.name, node_id, SOLO, (PlanMember(node_id, 1.0, needs.layer_count),))
