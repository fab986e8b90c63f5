"""Election and split planning: tables of meshes and the plan every node must agree on."""

from __future__ import annotations

import pytest

from meshdesk.core.planning import (SOLO, SPLIT, WAITING, Candidate, ModelNeeds, elect_host,
                                    largest_remainder, plan_model)

GB = 10**9
MODEL = ModelNeeds("m", 10 * GB, 40)  # needs 11 GB


def node(node_id: str, capacity_gb: float, **rtt) -> Candidate:
    return Candidate(node_id, int(capacity_gb * GB), dict(rtt))


@pytest.mark.parametrize("candidates, host", [
    ([node("a", 8), node("b", 16)], "b"),
    ([node("b", 16), node("a", 16)], "a"),  # ties: lowest id
    ([node("a", 0)], None),
    ([], None),
])
def test_election(candidates, host):
    elected = elect_host(candidates)
    assert (elected.node_id if elected else None) == host


def test_solo_when_the_host_fits():
    plan = plan_model(MODEL, [node("a", 12), node("b", 30)])
    assert plan.state == SOLO and plan.host == "b"
    assert [(m.node_id, m.layers) for m in plan.members] == [("b", 40)]


def test_fit_includes_the_margin():
    assert plan_model(MODEL, [node("a", 10.9)]).state == WAITING
    assert plan_model(MODEL, [node("a", 11.0)]).state == SOLO


def test_split_adds_nearest_members_until_it_fits_and_host_goes_last():
    plan = plan_model(MODEL, [node("h", 7, x=5, y=40, z=1), node("x", 3), node("y", 6), node("z", 2)])
    assert plan.state == SPLIT and plan.host == "h"
    assert plan.member_ids() == ("x", "z", "h")  # nearest first until it fits; by id; host last
    assert sum(m.layers for m in plan.members) == 40
    assert pytest.approx(sum(m.share for m in plan.members)) == 1.0


def test_rtt_jitter_within_a_band_never_changes_the_plan():
    """Two members on one LAN measure 0.3 and 0.5 ms, then 0.5 and 0.3: the same plan, so the
    model host is not restarted every gossip round (a 3-node split on loopback did that)."""
    members = [node("b", 3), node("c", 3)]
    before = plan_model(MODEL, [node("h", 6, b=0.3, c=0.5), *members], force_split=True)
    after = plan_model(MODEL, [node("h", 6, b=0.5, c=0.3), *members], force_split=True)
    assert before == after and before.member_ids() == ("b", "c", "h")
    tight = ModelNeeds("m", 7 * GB, 40)  # h and one member suffice: the nearer band is chosen
    assert plan_model(tight, [node("h", 6, b=25, c=4), *members]).member_ids() == ("c", "h")
    assert plan_model(tight, [node("h", 6, b=4.2, c=3.9), *members]).member_ids() == ("b", "h")


def test_shares_follow_capacity():
    plan = plan_model(MODEL, [node("h", 8, w=1), node("w", 4)])
    shares = {m.node_id: m.share for m in plan.members}
    assert shares == pytest.approx({"h": 2 / 3, "w": 1 / 3})
    assert {m.node_id: m.layers for m in plan.members} == {"h": 27, "w": 13}


def test_far_members_are_not_split_with():
    plan = plan_model(MODEL, [node("h", 8, w=81), node("w", 8)])
    assert plan.state == WAITING
    assert plan.waiting_reason == "waiting for more peers: need 11.0 GB, have 8.0 GB"


def test_rtt_measured_by_the_other_side_counts_too():
    assert plan_model(MODEL, [node("h", 8), node("w", 8, h=10)]).state == SPLIT
    assert plan_model(MODEL, [node("h", 8), node("w", 8, h=100)]).state == WAITING


def test_forced_split_uses_everyone_nearby_even_when_the_host_fits():
    plan = plan_model(MODEL, [node("h", 30, w=2), node("w", 10)], force_split=True)
    assert plan.state == SPLIT and plan.member_ids() == ("w", "h")


def test_forced_split_alone_is_solo():
    assert plan_model(MODEL, [node("h", 30)], force_split=True).state == SOLO


def test_manual_split_overrides_capacity_shares():
    plan = plan_model(MODEL, [node("h", 30, w=2), node("w", 10)], force_split=True, manual_split=(1, 3))
    assert [(m.node_id, m.layers) for m in plan.members] == [("w", 10), ("h", 30)]


def test_manual_split_of_the_wrong_length_is_ignored():
    plan = plan_model(MODEL, [node("h", 30, w=2), node("w", 10)], force_split=True, manual_split=(1, 1, 1))
    assert {m.node_id: m.layers for m in plan.members} == {"w": 10, "h": 30}


def test_waiting_reports_what_is_missing():
    plan = plan_model(MODEL, [node("a", 4, b=1), node("b", 5)])
    assert plan.state == WAITING and plan.host is None and plan.members == ()
    assert plan.waiting_reason == "waiting for more peers: need 11.0 GB, have 9.0 GB"


def test_every_node_computes_the_same_plan_whatever_the_order():
    nodes = [node("h", 6, x=5, y=40, z=1), node("x", 3), node("y", 9), node("z", 2)]
    assert plan_model(MODEL, nodes) == plan_model(MODEL, list(reversed(nodes)))


@pytest.mark.parametrize("shares, total, expected", [
    ([0.5, 0.5], 3, [2, 1]),
    ([1 / 3] * 3, 18, [6, 6, 6]),
    ([0.7, 0.2, 0.1], 10, [7, 2, 1]),
    ([0.45, 0.45, 0.1], 3, [2, 1, 0]),
    ([1.0], 18, [18]),
])
def test_largest_remainder(shares, total, expected):
    assert largest_remainder(shares, total) == expected
