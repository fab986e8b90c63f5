"""Which node serves which model, and how many plans each model gets."""

from __future__ import annotations

from meshdesk.core.assignment import MeshNode, WantedModel, assign, plan_mesh
from meshdesk.core.planning import SOLO, SPLIT, WAITING, ModelNeeds

GB = 10**9
BIG = WantedModel("big", ModelNeeds("big", 30 * GB, 60))
SMALL = WantedModel("small", ModelNeeds("small", 2 * GB, 24))


def node(node_id, capacity_gb, on_disk=(), serving=None, **rtt) -> MeshNode:
    return MeshNode(node_id, int(capacity_gb * GB), frozenset(on_disk), serving, dict(rtt))


def test_seeders_serve_their_model_and_joiners_fill_the_gaps():
    nodes = [node("a", 16, {"big", "small"}, serving="big"), node("b", 8, {"big", "small"}),
             node("c", 8, {"small"})]
    assert assign(nodes, [BIG, SMALL]) == {"a": "big", "b": "small", "c": "small"}


def test_joiners_prefer_models_nobody_serves_then_the_least_served():
    nodes = [node("a", 16, {"big", "small"}, serving="big"), node("b", 8, {"big", "small"}),
             node("c", 8, {"big", "small"})]
    assert assign(nodes, [BIG, SMALL]) == {"a": "big", "b": "small", "c": "big"}


def test_nodes_without_a_wanted_model_on_disk_or_capacity_serve_nothing():
    nodes = [node("a", 16, {"big"}, serving="big"), node("b", 8, {"other"}), node("c", 0, {"small"})]
    assert assign(nodes, [BIG, SMALL]) == {"a": "big"}


def test_a_model_that_fits_runs_solo_on_every_node_serving_it():
    nodes = [node("a", 16, {"small"}, serving="small"), node("b", 8, {"small"})]
    plans = plan_mesh(nodes, [SMALL])["small"]
    assert [(plan.host, plan.state) for plan in plans] == [("a", SOLO), ("b", SOLO)]


def test_a_model_no_node_can_hold_is_split_within_its_group():
    nodes = [node("a", 20, {"big", "small"}, serving="big", b=3), node("b", 20, {"big", "small"}),
             node("c", 8, {"small"}, serving="small")]
    plans = plan_mesh(nodes, [BIG, SMALL])
    assert [(plan.host, plan.state, plan.member_ids()) for plan in plans["big"]] == [("a", SPLIT, ("b", "a"))]
    assert [(plan.host, plan.state) for plan in plans["small"]] == [("c", SOLO)]


def test_a_model_that_cannot_fit_waits_and_says_why():
    plans = plan_mesh([node("a", 20, {"big"}, serving="big")], [BIG])["big"]
    assert [plan.state for plan in plans] == [WAITING]
    assert "need 33.0 GB, have 20.0 GB" in plans[0].waiting_reason


def test_a_forced_split_is_one_plan_even_when_the_model_fits():
    forced = WantedModel("small", SMALL.needs, force_split=True)
    nodes = [node("a", 16, {"small"}, serving="small", b=2), node("b", 8, {"small"})]
    plans = plan_mesh(nodes, [forced])["small"]
    assert [(plan.state, plan.member_ids()) for plan in plans] == [(SPLIT, ("b", "a"))]


def test_every_node_computes_the_same_assignment_whatever_the_order():
    nodes = [node("a", 16, {"big", "small"}, serving="big"), node("b", 8, {"big", "small"}),
             node("c", 8, {"big", "small"}), node("d", 4, {"small"})]
    assert plan_mesh(nodes, [BIG, SMALL]) == plan_mesh(list(reversed(nodes)), [BIG, SMALL])
