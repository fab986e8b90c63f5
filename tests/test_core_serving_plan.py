"""What a node should run, decided from records (pure): plans and routes, this node's hosts and
tunnels, and the commands that get it there. Table tests, no IO."""

from __future__ import annotations

import pytest

from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.node_record import NodeRecord
from meshdesk.core.serving_plan import (
    NOTHING_PLANNED,
    NOTHING_RUNNING,
    CloseTunnel,
    HostConfig,
    Layout,
    OpenTunnel,
    Route,
    StartHost,
    StopHost,
    changes,
    desired_layout,
    pick_host,
    plan_serving,
)

GB = 10**9
SMALL, BIG = "aa" * 32, "bb" * 32  # digests


def advert(digest: str, size_gb: float, **options) -> ModelAdvert:
    name = {SMALL: "small.gguf", BIG: "big.gguf"}[digest]
    return ModelAdvert(name, int(size_gb * GB), digest, 10, **options)


def record(node_id: str, capacity_gb: float, *models: ModelAdvert, rtt_ms: dict | None = None) -> NodeRecord:
    serving = next((model.digest for model in models if model.wanted), None)
    return NodeRecord(node_id=node_id, name=node_id, addresses=(), capacity_bytes=int(capacity_gb * GB),
                      models=models, serving=serving, role="standby", versions={}, rtt_ms=rtt_ms or {},
                      public_key="", generation=1)


def layout_for(records, own_id: str, on_disk=(SMALL, BIG), worker_ready: bool = True) -> Layout:
    return desired_layout(plan_serving(records), own_id, frozenset(on_disk), worker_ready)


# Two nodes that can each hold the small model; the big one (22 GB with its margin) needs both.
SMALL_SEEDED_BY_A = [record("A", 16, advert(SMALL, 5, wanted=True)), record("B", 8, advert(SMALL, 5))]
BIG_SEEDED_BY_A = [record("A", 16, advert(BIG, 20, wanted=True)), record("B", 8, advert(BIG, 20))]
BIG_SPLIT = HostConfig(BIG, ("B", "A"), (0.3333, 0.6667))


@pytest.mark.parametrize("records, own_id, on_disk, worker_ready, hosts, tunnels, held_back", [
    # a model that fits runs solo on every node serving it; B was given it (nobody else serves it)
    (SMALL_SEEDED_BY_A, "A", (SMALL,), True, {SMALL: HostConfig(SMALL)}, {}, ()),
    (SMALL_SEEDED_BY_A, "B", (SMALL,), False, {SMALL: HostConfig(SMALL)}, {}, ()),  # solo needs no rpc worker
    # a split: the remote member first, this node (the host) last, shares by capacity
    (BIG_SEEDED_BY_A, "A", (BIG,), True, {BIG: BIG_SPLIT}, {"B": BIG}, ()),
    (BIG_SEEDED_BY_A, "B", (BIG,), True, {}, {}, ()),  # a member runs no host: its rpc worker serves
    # the host's own rpc worker is not up yet: nothing starts, and the caller is told why
    (BIG_SEEDED_BY_A, "A", (BIG,), False, {}, {}, (BIG,)),
    # the file is not on this disk (yet): nothing to run
    (SMALL_SEEDED_BY_A, "A", (), True, {}, {}, ()),
    # too little capacity in the mesh: the plan waits, nobody hosts
    ([record("A", 4, advert(BIG, 20, wanted=True))], "A", (BIG,), True, {}, {}, ()),
    # a node nobody's plan names
    (SMALL_SEEDED_BY_A, "C", (SMALL,), True, {}, {}, ()),
])
def test_desired_layout(records, own_id, on_disk, worker_ready, hosts, tunnels, held_back):
    layout = layout_for(records, own_id, on_disk, worker_ready)
    assert (dict(layout.hosts), dict(layout.tunnels), layout.held_back) == (hosts, tunnels, held_back)


def test_split_options_come_from_the_seeders():
    forced = [record("A", 16, advert(SMALL, 5, wanted=True, split=True)), record("B", 8, advert(SMALL, 5))]
    assert layout_for(forced, "A").hosts == {SMALL: HostConfig(SMALL, ("B", "A"), (0.3333, 0.6667))}
    manual = [record("A", 16, advert(BIG, 20, wanted=True, tensor_split=(1.0, 3.0))), record("B", 8, advert(BIG, 20))]
    assert layout_for(manual, "A").hosts == {BIG: HostConfig(BIG, ("B", "A"), (0.25, 0.75))}


def test_a_far_member_is_left_out_of_the_split():
    far = [record("A", 16, advert(BIG, 20, wanted=True), rtt_ms={"B": 500.0}), record("B", 8, advert(BIG, 20))]
    assert layout_for(far, "A").hosts == {}  # without B the model cannot fit: the plan waits
    assert plan_serving(far).routes["big"].waiting_reason.startswith("waiting for more peers: need 22.0 GB")


def test_plans_routes_and_roles():
    plan = plan_serving(SMALL_SEEDED_BY_A + [record("C", 0)])
    assert plan.model_ids == {SMALL: "small"}
    assert plan.routes == {"small": Route(SMALL, ("A", "B"))}
    assert [plan.role(node, client=False) for node in "ABC"] == ["host", "host", "standby"]
    assert plan.role("A", client=True) == "client"
    split = plan_serving(BIG_SEEDED_BY_A)
    assert [split.role(node, client=False) for node in "AB"] == ["host", "worker"]
    assert split.routes == {"big": Route(BIG, ("A",))}
    assert plan_serving([]) == NOTHING_PLANNED


def test_a_model_nobody_wants_is_not_planned():
    plan = plan_serving([record("A", 16, advert(SMALL, 5)), record("B", 8, advert(BIG, 20))])
    assert plan == NOTHING_PLANNED


@pytest.mark.parametrize("hosts, in_flight, local_only, chosen", [
    (("A", "B"), {}, False, "A"),                  # ties go to this node
    (("A", "B"), {"A": 1}, False, "B"),            # then to the least busy
    (("B", "C"), {"B": 2, "C": 1}, False, "C"),
    (("B", "C"), {"B": 1, "C": 1}, False, "B"),    # ties among others: the lowest id
    (("A", "B"), {"A": 5}, True, "A"),             # a forwarded request stays here
    (("B",), {}, True, None),                      # ...and finds no host when this node has none
    ((), {}, False, None),
])
def test_pick_host(hosts, in_flight, local_only, chosen):
    assert pick_host(Route(SMALL, hosts), "A", in_flight, local_only) == chosen


# ---------------------------------------------------------------- changes


SOLO_SMALL = Layout({SMALL: HostConfig(SMALL)}, {})
SPLIT_BIG = Layout({BIG: BIG_SPLIT}, {"B": BIG})
RESHARED_BIG = Layout({BIG: HostConfig(BIG, ("B", "A"), (0.5, 0.5))}, {"B": BIG})
SPLIT_WITH_C = Layout({BIG: HostConfig(BIG, ("C", "B", "A"), (0.2, 0.3, 0.5))}, {"B": BIG, "C": BIG})


@pytest.mark.parametrize("running, desired, commands", [
    (NOTHING_RUNNING, SOLO_SMALL, [StartHost(HostConfig(SMALL))]),
    (NOTHING_RUNNING, SPLIT_BIG, [OpenTunnel("B", BIG), StartHost(BIG_SPLIT)]),
    (SPLIT_BIG, SPLIT_BIG, []),  # the plan did not change: nothing restarts
    (SOLO_SMALL, SOLO_SMALL, []),
    (SPLIT_BIG, RESHARED_BIG, [StopHost(BIG), StartHost(RESHARED_BIG.hosts[BIG])]),  # the tunnel stays
    (SPLIT_BIG, NOTHING_RUNNING, [StopHost(BIG), CloseTunnel("B")]),  # the model was dropped
    (SPLIT_BIG, SPLIT_WITH_C, [StopHost(BIG), OpenTunnel("C", BIG), StartHost(SPLIT_WITH_C.hosts[BIG])]),
    (SPLIT_WITH_C, SPLIT_BIG, [StopHost(BIG), CloseTunnel("C"), StartHost(BIG_SPLIT)]),
    (SPLIT_BIG, SOLO_SMALL, [StopHost(BIG), CloseTunnel("B"), StartHost(HostConfig(SMALL))]),
    # held back (the rpc worker is not up): the desired layout has no host, so nothing starts
    (NOTHING_RUNNING, Layout({}, {}, held_back=(BIG,)), []),
])
def test_changes(running, desired, commands):
    assert changes(running, desired) == commands


def test_records_in_commands_out():
    """The whole way: a seeder asks for the big model, the host starts it once, then B leaves."""
    running = NOTHING_RUNNING
    waiting = layout_for(BIG_SEEDED_BY_A, "A", worker_ready=False)
    assert changes(running, waiting) == []
    ready = layout_for(BIG_SEEDED_BY_A, "A")
    assert changes(running, ready) == [OpenTunnel("B", BIG), StartHost(BIG_SPLIT)]
    assert changes(ready, layout_for(BIG_SEEDED_BY_A, "A")) == []
    alone = layout_for(BIG_SEEDED_BY_A[:1], "A")
    assert changes(ready, alone) == [StopHost(BIG), CloseTunnel("B")]
