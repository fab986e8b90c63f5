"""Who hosts a model and how its layers are split: pure functions, the same answer on every node."""

from __future__ import annotations

from dataclasses import dataclass

from meshdesk.core.states import PlanState

FIT_MARGIN = 1.1        # a model needs its bytes x 1.1 (compute buffers), plus its KV cache
# The context a host runs a model with unless started with `--context N`, capped at the model's
# trained context: `app.command_line.DEFAULT_CONTEXT` is this number (tests hold them equal).
MESH_CONTEXT = 16384
MAX_CONTEXT = 1 << 24   # tokens; a larger number on the wire is refused
MAX_SPLIT_RTT_MS = 80.0  # farther members stay in the mesh as API clients only
# Measured RTTs jitter by milliseconds from one gossip round to the next. Members whose RTTs fall
# in the same band are equally near: ordered by id, so that jitter never changes a plan (every
# change restarts the model host).
RTT_BAND_MS = 10.0
GB = 1e9

SOLO, SPLIT, WAITING = PlanState.SOLO, PlanState.SPLIT, PlanState.WAITING


@dataclass(frozen=True)
class Candidate:
    """A member that offers capacity for the model; one without its file (`has_file` False)
    may take part as a split member (its layers travel once), never host."""

    node_id: str
    capacity_bytes: int
    rtt_ms: dict  # node id -> measured round trip, as gossiped by this candidate
    has_file: bool = True


@dataclass(frozen=True)
class ModelNeeds:
    """What a model needs: its weights x FIT_MARGIN, plus its KV cache for `context` tokens
    (`kv_bytes_per_token` 0 when its advert does not say: then the margin alone)."""

    name: str
    size_bytes: int
    layer_count: int
    kv_bytes_per_token: int = 0
    context: int = MESH_CONTEXT

    @property
    def kv_bytes(self) -> int:
        return self.kv_bytes_per_token * self.context


def planned_context(trained: int | None) -> int:
    """The context the mesh plans a host for: MESH_CONTEXT, or less if the model was trained for less."""
    return min(MESH_CONTEXT, trained) if trained else MESH_CONTEXT


@dataclass(frozen=True)
class PlanMember:
    node_id: str
    share: float
    layers: int


@dataclass(frozen=True)
class Plan:
    model: str
    host: str | None
    state: PlanState
    members: tuple[PlanMember, ...] = ()
    waiting_reason: str | None = None

    def member_ids(self) -> tuple[str, ...]:
        return tuple(member.node_id for member in self.members)

    def to_dict(self) -> dict:
        return {"model": self.model, "host": self.host, "state": self.state,
                "members": [{"id": m.node_id, "share": round(m.share, 4), "layers": m.layers}
                            for m in self.members],
                "waiting_reason": self.waiting_reason}


def elect_host(candidates: list[Candidate]) -> Candidate | None:
    """Among those with the file, the most capacity wins; ties go to the lowest node id."""
    ranked = sorted((candidate for candidate in candidates if candidate.has_file), key=lambda candidate: (-candidate.capacity_bytes, candidate.node_id))
    return ranked[0] if ranked and ranked[0].capacity_bytes > 0 else None


def needed_bytes(model: ModelNeeds) -> float:
    return model.size_bytes * FIT_MARGIN + model.kv_bytes


def member_needed_bytes(model: ModelNeeds, layers: int) -> float:
    """A split member's part: the weights and the KV cache of its layers (both go by layer)."""
    return needed_bytes(model) * layers / max(model.layer_count, 1)


def round_trip(host: Candidate, other: Candidate) -> float | None:
    """The RTT either side measured (the host's view first)."""
    measured = host.rtt_ms.get(other.node_id, other.rtt_ms.get(host.node_id))
    return None if measured is None else float(measured)


def nearby_by_rtt(host: Candidate, others: list[Candidate]) -> list[Candidate]:
    """Members close enough to split with, nearest RTT band first (unmeasured ones last)."""
    timed = [(round_trip(host, other), other) for other in others if other.capacity_bytes > 0]
    close = [(rtt, other) for rtt, other in timed if rtt is None or rtt <= MAX_SPLIT_RTT_MS]
    close.sort(key=lambda pair: (pair[0] is None, rtt_band(pair[0]), pair[1].node_id))
    return [other for _, other in close]


def rtt_band(rtt: float | None) -> int:
    return 0 if rtt is None else int(rtt // RTT_BAND_MS)


def plan_model(model: ModelNeeds, candidates: list[Candidate], force_split: bool = False,
               manual_split: tuple[float, ...] | None = None) -> Plan:
    host = elect_host(candidates)
    if host is None:
        return waiting(model, 0)
    if needed_bytes(model) <= host.capacity_bytes and not force_split:
        return Plan(model.name, host.node_id, SOLO, (PlanMember(host.node_id, 1.0, model.layer_count),))
    group = grow_group(model, host, [c for c in candidates if c.node_id != host.node_id], force_split)
    total = sum(member.capacity_bytes for member in group)
    if needed_bytes(model) > total:
        return waiting(model, total)
    return Plan(model.name, host.node_id, SPLIT if len(group) > 1 else SOLO,
                split_members(model, group, manual_split))


def grow_group(model: ModelNeeds, host: Candidate, others: list[Candidate], force_split: bool) -> list[Candidate]:
    """The host plus the nearest members, until the model fits (forced: everyone nearby)."""
    group = [host]
    for other in nearby_by_rtt(host, others):
        if not force_split and sum(c.capacity_bytes for c in group) >= needed_bytes(model):
            break
        group.append(other)
    # The host goes last: llama.cpp puts the output layer on the last device. The members before
    # it go by id: their order costs nothing (the host relays between them either way), and an
    # order by RTT would change with it.
    return sorted(group[1:], key=lambda member: member.node_id) + group[:1]


def split_members(model: ModelNeeds, group: list[Candidate],
                  manual_split: tuple[float, ...] | None) -> tuple[PlanMember, ...]:
    weights = manual_weights(group, manual_split) or [float(c.capacity_bytes) for c in group]
    total = sum(weights)
    shares = [weight / total for weight in weights]
    layers = largest_remainder(shares, model.layer_count)
    return tuple(PlanMember(c.node_id, share, count) for c, share, count in zip(group, shares, layers))


def manual_weights(group: list[Candidate], manual_split: tuple[float, ...] | None) -> list[float] | None:
    """`--tensor-split R,R,...` in the plan's device order; ignored if the count differs."""
    if manual_split is None or len(manual_split) != len(group) or sum(manual_split) <= 0:
        return None
    return [float(ratio) for ratio in manual_split]


def largest_remainder(shares: list[float], total: int) -> list[int]:
    """Whole layer counts in proportion to `shares` that add up to `total`."""
    exact = [share * total for share in shares]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


def waiting(model: ModelNeeds, have_bytes: float) -> Plan:
    reason = (f"waiting for more peers: need {needed_bytes(model) / GB:.1f} GB, "
              f"have {have_bytes / GB:.1f} GB")
    return Plan(model.name, None, WAITING, (), reason)
