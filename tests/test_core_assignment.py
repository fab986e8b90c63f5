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


# --- members without the file: their layers travel once ------------------------------------------

FORCED_SMALL = WantedModel("small", ModelNeeds("small", 2 * GB, 24), force_split=True)


def empty(node_id, capacity_gb, space_gb) -> MeshNode:
    return MeshNode(node_id, int(capacity_gb * GB), frozenset(), None, {}, int(space_gb * GB))


def test_a_node_with_nothing_on_disk_joins_a_forced_split_as_a_member_never_the_host():
    nodes = [node("b", 16, {"small"}, serving="small"), empty("a", 64, 100)]  # "a" wins ties, has more
    assert assign(nodes, [FORCED_SMALL]) == {"b": "small", "a": "small"}
    (plan,) = plan_mesh(nodes, [FORCED_SMALL])["small"]
    assert plan.state == SPLIT and plan.host == "b" and plan.member_ids() == ("a", "b")


def test_a_member_without_the_file_offers_no_more_than_its_room_for_layers():
    nodes = [node("b", 16, {"small"}, serving="small"), empty("a", 64, 16)]
    (plan,) = plan_mesh(nodes, [FORCED_SMALL])["small"]
    assert [round(member.share, 2) for member in plan.members] == [0.5, 0.5]


def test_without_room_for_layers_or_a_split_to_join_a_node_with_nothing_on_disk_serves_nothing():
    assert assign([node("b", 16, {"small"}, serving="small"), empty("a", 64, 0)], [FORCED_SMALL]) == {"b": "small"}
    # the model fits its seeder alone and is not forced to split: no plan would use the joiner
    assert assign([node("b", 16, {"small"}, serving="small"), empty("a", 64, 100)], [SMALL]) == {"b": "small"}


def test_a_model_too_large_for_every_holder_takes_members_without_the_file():
    nodes = [node("b", 20, {"big"}, serving="big"), empty("a", 20, 100)]
    (plan,) = plan_mesh(nodes, [BIG])["big"]
    assert plan.state == SPLIT and plan.host == "b" and set(plan.member_ids()) == {"a", "b"}


def test_with_no_node_holding_the_file_there_is_no_host():
    (plan,) = plan_mesh([empty("a", 64, 100), empty("c", 64, 100)], [FORCED_SMALL])["small"]
    assert plan.state == WAITING and plan.host is None


def test_the_room_for_layers_is_gossiped_signed_and_reads_as_none_from_a_record_without_it():
    import pytest

    from meshdesk.core.gossip_values import MembershipError
    from meshdesk.core.node_record import NodeRecord, signing_bytes
    from meshdesk.core.serving_plan import plan_serving
    from tests.test_core_serving_plan import SMALL as SMALL_DIGEST, advert, record

    seeder = record("b" * 16, 16, advert(SMALL_DIGEST, 2, wanted=True, split=True))
    joiner = NodeRecord.from_wire({**record("a" * 16, 64).to_wire(), "layer_space_bytes": 100 * GB})
    assert joiner.layer_space_bytes == 100 * GB and b'"layer_space_bytes":100000000000' in signing_bytes(joiner)
    (plan,) = plan_serving([seeder, joiner]).plans[SMALL_DIGEST]
    assert plan.state == SPLIT and plan.host == "b" * 16 and "a" * 16 in plan.member_ids()
    older = record("a" * 16, 64).to_wire()
    del older["layer_space_bytes"]
    assert NodeRecord.from_wire(older).layer_space_bytes == 0
    with pytest.raises(MembershipError):
        NodeRecord.from_wire({**older, "layer_space_bytes": -1})
