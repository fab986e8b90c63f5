"""Several models in one mesh: which node serves which model, and each model's plans (pure).

Each node serves one model. A node started with a model serves that one. A node that joined
without one is given a model the mesh wants: first one nobody serves yet, then the least served,
among models it already has on disk (no download wait). A node with none of them on disk but
room for layers (`layer_space_bytes`) joins a model that takes split members (forced to split,
or too large for every node with its file): it is a member with capacity min(its capacity,
its room for layers), never the host. A model that fits on one node
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
    layer_space_bytes: int = 0       # disk for layers of models not on it


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
        if choice is None and node.layer_space_bytes > 0:
            choice = least_served(digests, assigned, frozenset(
                model.digest for model in wanted if takes_members(model, nodes)))
        if choice is not None:
            assigned[node.node_id] = choice
    return assigned


def least_served(digests: list[str], assigned: dict[str, str], on_disk: frozenset[str]) -> str | None:
    """Among models on this disk: nobody serving it first, then fewest servers, then wanted order."""
    counts = {digest: list(assigned.values()).count(digest) for digest in digests if digest in on_disk}
    if not counts:
        return None
    return min(counts, key=lambda digest: (counts[digest], digests.index(digest)))


def takes_members(model: WantedModel, nodes: list[MeshNode]) -> bool:
    """Whether a node without the file could help: the model splits anyway, or no node with it fits it."""
    holders = [node for node in nodes if model.digest in node.models_on_disk]
    return model.force_split or not any(needed_bytes(model.needs) <= node.capacity_bytes for node in holders)


def plan_mesh(nodes: list[MeshNode], wanted: list[WantedModel]) -> dict[str, list[Plan]]:
    """digest -> the plans that serve it (several solo replicas, or one split/waiting plan)."""
    assigned = assign(nodes, wanted)
    return {model.digest: plan_group(model, [node for node in nodes if assigned.get(node.node_id) == model.digest])
            for model in wanted}


def plan_group(model: WantedModel, group: list[MeshNode]) -> list[Plan]:
    candidates = [candidate(model, node) for node in group]
    if not model.force_split:
        fitting = sorted((node for node in group if needed_bytes(model.needs) <= node.capacity_bytes
                          and model.digest in node.models_on_disk),
                         key=lambda node: node.node_id)
        if fitting:
            return [solo(model.needs, node.node_id) for node in fitting]
    return [plan_model(model.needs, candidates, model.force_split, model.manual_split)]


def candidate(model: WantedModel, node: MeshNode) -> Candidate:
    if model.digest in node.models_on_disk:
        return Candidate(node.node_id, node.capacity_bytes, dict(node.rtt_ms))
    return Candidate(node.node_id, min(node.capacity_bytes, node.layer_space_bytes), dict(node.rtt_ms), has_file=False)


def solo(needs: ModelNeeds, node_id: str) -> Plan:
    return Plan(needs.name, node_id, SOLO, (PlanMember(node_id, 1.0, needs.layer_count),))
