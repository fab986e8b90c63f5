"""The models the mesh wants as mesh state (core.wants, core.membership_wants): last writer
wins, convergence in any order, bounds, strict wire validation, persistence, and the plans
that follow from them (core.serving_plan)."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from meshdesk.core.gossip_message import GossipMessage
from meshdesk.core.gossip_values import MembershipError
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.node_record import NodeRecord
from meshdesk.core.planning import SOLO, SPLIT, WAITING
from meshdesk.core.serving_plan import plan_serving
from meshdesk.core.wants import MAX_WANTS, MAX_WANTS_PER_AUTHOR, WantEntry, WantsLedger
from meshdesk.node.mesh_state import MeshMemory, load_memory, restore_decisions, save_memory
from meshdesk.node.own_state import OwnState, settle_wants
from tests.gossip_keys import ID
from tests.test_core_membership import FIVE, FULL_MESH, SimulatedMesh, gossip_from, make_membership

GB = 2**30
MODEL = ModelAdvert("gemma.gguf", 2 * GB, "ab" * 32, 18)
OTHER = ModelAdvert("other.gguf", GB, "cd" * 32, 10)
PATH = Path("/models/gemma.gguf")
DIGESTS = {PATH: MODEL.digest}


def entry(advert=MODEL, wanted=True, counter=1, author="A") -> WantEntry:
    return WantEntry(advert, wanted, counter, ID[author])


# ---------------------------------------------------------------- the ledger


def test_any_order_of_the_same_entries_gives_the_same_ledger():
    entries = [entry(counter=1), entry(wanted=False, counter=5, author="B"), entry(counter=3, author="C"),
               entry(OTHER, counter=2), entry(OTHER, wanted=False, counter=2, author="E"), entry(counter=5, author="A")]
    ledgers = []
    for order in itertools.permutations(entries):
        ledger = WantsLedger()
        ledger.merge_all(order)
        ledgers.append([e.to_wire() for e in ledger.entries()])
    assert all(found == ledgers[0] for found in ledgers)
    winners = {e.digest: e for e in WantEntry_list(ledgers[0])}
    # counter 5 ties: the higher author id wins; for OTHER counter 2 ties likewise
    assert winners[MODEL.digest].author == max(ID["A"], ID["B"])
    assert winners[OTHER.digest].author == max(ID["A"], ID["E"])


def WantEntry_list(wires):
    return [WantEntry.from_wire(wire) for wire in wires]


def test_a_newer_stamp_wins_an_older_or_equal_one_changes_nothing():
    ledger = WantsLedger()
    assert ledger.merge(entry(counter=7))
    assert not ledger.merge(entry(wanted=False, counter=6, author="B"))
    assert not ledger.merge(entry(counter=7))
    assert ledger.get(MODEL.digest).wanted
    assert ledger.merge(entry(wanted=False, counter=8, author="B"))
    assert not ledger.get(MODEL.digest).wanted and ledger.wanted() == []
    assert ledger.next_counter(clock_ms=3) == 9 and ledger.next_counter(clock_ms=100) == 100


def test_the_ledger_is_bounded_in_all_and_per_author_and_counts_what_it_leaves_out():
    ledger = WantsLedger()
    def advert(i):
        return ModelAdvert(f"m{i}.gguf", 1, f"{i:064x}")
    for i in range(MAX_WANTS_PER_AUTHOR + 3):
        ledger.merge(WantEntry(advert(i), True, i + 1, ID["A"]))
    assert len(ledger) == MAX_WANTS_PER_AUTHOR and ledger.ignored == 3
    # a held digest may still change hands
    assert ledger.merge(WantEntry(advert(0), False, 10**6, ID["A"]))
    for i in range(1000, 1000 + MAX_WANTS):
        ledger.merge(WantEntry(advert(i), True, 1, ID["B" if i % 2 else "C"]))
    assert len(ledger) == MAX_WANTS and ledger.ignored == 3 + MAX_WANTS_PER_AUTHOR
    # full: a newer entry takes the place of the oldest drop, never of a want
    assert ledger.merge(WantEntry(advert(5000), True, 10**7, ID["D"]))
    assert advert(0).digest not in ledger and len(ledger) == MAX_WANTS
    assert not ledger.merge(WantEntry(advert(5001), True, 10**7, ID["D"])) and advert(5001).digest not in ledger
    assert not ledger.merge(entry(counter=2**40), limit=2**39) and ledger.refused == 1


@pytest.mark.parametrize("change, fragment", [
    ({"advert": None}, "model advert"),
    ({"advert": {"name": "x.gguf", "size": -1, "digest": "d"}}, "model size"),
    ({"wanted": "yes"}, "want wanted"),
    ({"counter": -1}, "want counter"),
    ({"counter": 2**63}, "want counter"),
    ({"counter": True}, "want counter"),
    ({"author": ""}, "want author"),
    ({"author": "x" * 65}, "want author"),
    ({"colour": "red"}, "unknown field"),
    ({"wanted": None}, "want wanted"),
])
def test_a_malformed_entry_is_refused_with_one_line(change, fragment):
    wire = {**entry().to_wire(), **change}
    with pytest.raises(MembershipError) as raised:
        WantEntry.from_wire(wire)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(MembershipError, match="lacks counter"):
        WantEntry.from_wire({k: v for k, v in entry().to_wire().items() if k != "counter"})


def test_an_entry_round_trips_through_json_and_forgets_the_adverts_own_wanted_flag():
    wire = entry(ModelAdvert("x.gguf", 5, "ef" * 32, 3, wanted=True, split=True, tensor_split=(1.0, 2.0))).to_wire()
    back = WantEntry.from_wire(json.loads(json.dumps(wire)))
    assert back.to_wire() == wire and back.advert.wanted is False and back.advert.force_split


# ---------------------------------------------------------------- in gossip


def wanting(label, generation=100):
    """A node whose record advertises MODEL and flags it wanted (as `--model` does)."""
    return make_membership(label, generation, models=(ModelAdvert(**{**MODEL.__dict__, "wanted": True}),))


def test_a_want_spreads_to_every_node_and_outlives_its_author():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.nodes["A"] = wanting("A")
    for other in FIVE[1:]:
        mesh.connect("A", other)
    mesh.nodes["A"].want(mesh.now, MODEL.digest)
    mesh.run_for(2.0)
    assert all(node.wants.get(MODEL.digest).wanted for node in mesh.nodes.values())
    mesh.kill("A")
    mesh.run_for(10.0)
    assert all(ID["A"] not in [r.node_id for r in mesh.nodes[n].alive_records(mesh.now)] for n in FIVE[1:])
    assert all(mesh.nodes[n].wants.get(MODEL.digest).wanted for n in FIVE[1:])


def test_a_drop_converges_and_a_stale_wanted_record_never_undoes_it_but_a_later_serve_does():
    a, b = wanting("A"), make_membership("B", 200, models=(MODEL,))
    a.peer_connected(0.0, ID["B"]), b.peer_connected(0.0, ID["A"])
    a.want(0.0, MODEL.digest)
    exchange(a, b, 0.0)
    b.drop_model(1.0, MODEL.digest)
    exchange(a, b, 1.0)
    assert not a.wants.get(MODEL.digest).wanted
    a.update_own(2.0, name="renamed")  # A's record still flags the model wanted
    exchange(a, b, 2.0)
    assert not a.wants.get(MODEL.digest).wanted and not b.wants.get(MODEL.digest).wanted
    a.want(3.0, MODEL.digest)  # an explicit serve, after the drop
    exchange(a, b, 3.0)
    assert a.wants.get(MODEL.digest).wanted and b.wants.get(MODEL.digest).wanted
    with pytest.raises(ValueError, match="advertises no model"):
        b.want(3.0, OTHER.digest)
    with pytest.raises(ValueError, match="does not serve"):
        b.drop_model(3.0, OTHER.digest)


def exchange(a, b, now):
    for _ in range(3):
        for sender, receiver in ((a, b), (b, a)):
            for peer, message in sender.messages_to_send(now + 1.0):
                if peer == receiver.own.node_id:
                    receiver.receive(now + 1.0, sender.own.node_id, message)


def test_entries_already_sent_or_received_are_not_sent_again():
    a, b = wanting("A"), make_membership("B", 200)
    a.want(0.0, MODEL.digest)
    first = gossip_from(a, ID["B"])
    assert [w["advert"]["digest"] for w in first["wants"]] == [MODEL.digest]
    b.peer_connected(0.0, ID["A"])
    b.receive(0.0, ID["A"], first)
    assert [w for _, m in b.messages_to_send(5.0) for w in m["wants"]] == []
    assert [w for _, m in a.messages_to_send(5.0) for w in m["wants"]] == []


def test_many_wants_are_split_into_messages_within_the_budget():
    a = make_membership("A", 100)
    for i in range(MAX_WANTS):
        author = ID["A" if i % 2 else "C"]  # within the bound per author
        assert a.wants.merge(WantEntry(ModelAdvert("n" * 200 + f"{i}.gguf", 1, f"{i:0128x}"), True, i + 1, author))
    a.peer_connected(0.0, ID["B"])
    messages = [m for _, m in a.messages_to_send(0.0)]
    budget = 6000
    parts, left_out = GossipMessage.from_wire(messages[0]).split(budget)
    assert left_out == 0 and len(parts) > 1
    assert all(len(json.dumps(p.to_wire(), separators=(",", ":"))) <= budget for p in parts)
    assert sum(len(p.wants) for p in parts) == MAX_WANTS


def test_a_random_gossip_order_with_losses_still_converges():
    mesh = SimulatedMesh(FIVE, FULL_MESH, seed=3, loss=0.3, jitter=0.05)
    rng = random.Random(5)
    mesh.run_for(2.0)
    for step in range(12):
        node = mesh.nodes[rng.choice(FIVE)]
        advert = rng.choice([MODEL, OTHER])
        node.wants.merge(WantEntry(advert, rng.random() < 0.5, node.wants.next_counter(step), node.own.node_id))
        node._make_due(mesh.now, node._connected)  # as a local write does
        mesh.run_for(rng.random())
    mesh.run_for(10.0)
    views = [[e.to_wire() for e in node.wants.entries()] for node in mesh.nodes.values()]
    assert all(view == views[0] for view in views) and len(views[0]) == 2


# ---------------------------------------------------------------- persistence


def test_wants_survive_a_restart(tmp_path):
    b = make_membership("B", 200, models=(MODEL,))
    b.wants.merge(entry(counter=5))
    b.drop_model(1.0, MODEL.digest)
    memory = MeshMemory(mesh_id="m")
    memory.remember_decisions(b)
    save_memory(tmp_path, memory)
    again = wanting("B", 300)  # its record flags the model wanted, and still it stays dropped
    restore_decisions(again, load_memory(tmp_path), 0.0)
    assert [e.to_wire() for e in again.wants.entries()] == [e.to_wire() for e in b.wants.entries()]
    assert not again.wants.get(MODEL.digest).wanted
    assert again.want(0.0, MODEL.digest).counter > b.wants.get(MODEL.digest).counter  # a fresh want wins


def test_a_hand_edited_state_file_loses_only_the_bad_entries(tmp_path):
    memory = MeshMemory(mesh_id="m", wants=[entry().to_wire(), {"advert": 1}, "junk"])
    node = make_membership("B", 200)
    restore_decisions(node, memory, 0.0)
    assert len(node.wants) == 1 and node.wants.ignored == 2
    restore_decisions(make_membership("C", 200), MeshMemory(mesh_id="m", wants="nonsense"), 0.0)


# ---------------------------------------------------------------- plans


def record(label, capacity_gb, *models, serving=None) -> NodeRecord:
    return NodeRecord(node_id=ID[label], name=label, addresses=(), capacity_bytes=capacity_gb * GB,
                      models=models, serving=serving, role="standby", versions={}, rtt_ms={},
                      public_key="", generation=1)


def test_the_mesh_serves_a_wanted_model_on_any_alive_holder_and_never_a_dropped_one():
    wants = [entry(counter=1, author="A")]
    assert plan_serving([record("B", 8, MODEL)]).plans == {}  # the records alone: nobody alive asks
    plan = plan_serving([record("B", 8, MODEL)], wants)  # A, who asked, is gone
    assert [(p.state, p.host) for p in plan.plans[MODEL.digest]] == [(SOLO, ID["B"])]
    assert plan.routes["gemma"].hosts == (ID["B"],)
    # B's own record flagging the model wanted does not outweigh a drop
    flagged = ModelAdvert(**{**MODEL.__dict__, "wanted": True})
    dropped = plan_serving([record("B", 8, flagged, serving=MODEL.digest)], [entry(wanted=False, counter=2)])
    assert dropped.plans == {} and dropped.routes == {}


def test_split_options_travel_in_the_entry():
    split = ModelAdvert(**{**MODEL.__dict__, "split": True})
    plan = plan_serving([record("B", 8, MODEL), record("C", 8, MODEL)], [entry(split, counter=1)])
    assert [p.state for p in plan.plans[MODEL.digest]] == [SPLIT]


def test_a_second_holder_asking_for_the_model_keeps_the_seeders_split():
    """B starts with `--model` on the same file but no `--split`: the mesh must not go solo."""
    split = ModelAdvert(**{**MODEL.__dict__, "split": True, "wanted": True})
    a, b = make_membership("A", 200, models=(split,)), make_membership("B", 200, models=(MODEL,))
    a.peer_connected(0.0, ID["B"]), b.peer_connected(0.0, ID["A"])
    a.want(0.0, MODEL.digest)
    exchange(a, b, 0.0)
    assert b.want(2.0, MODEL.digest).advert.split
    exchange(a, b, 2.0)
    assert a.wants.get(MODEL.digest).advert.split and b.wants.get(MODEL.digest).advert.split


def test_a_wanted_model_no_alive_member_holds_waits_and_says_why():
    plan = plan_serving([record("B", 8, OTHER)], [entry(counter=1)])
    (waiting,) = plan.plans[MODEL.digest]
    assert waiting.state == WAITING
    assert plan.routes["gemma"].hosts == ()
    assert plan.routes["gemma"].waiting_reason.startswith("waiting for a member with the file: no alive member holds gemma")


# ---------------------------------------------------------------- a node's own asks


class WantsMesh:
    """The mesh's side of `settle_wants`: a real ledger, written as MeshService writes it."""

    def __init__(self, *entries: WantEntry):
        self.ledger = WantsLedger()
        self.ledger.merge_all(entries)
        self.asked: list[str] = []

    def mesh_wants(self):
        return self.ledger.entries()

    def want_model(self, digest: str) -> None:
        self.asked.append(digest)
        self.ledger.merge(WantEntry(MODEL, True, self.ledger.next_counter(0), ID["A"]))


def test_an_explicit_model_at_start_is_a_fresh_want_over_a_remembered_drop():
    mesh, own = WantsMesh(entry(wanted=False, counter=9, author="B")), OwnState("a", wants=[PATH])
    assert settle_wants(own, mesh, DIGESTS.get) == set()
    assert mesh.asked == [MODEL.digest] and mesh.ledger.get(MODEL.digest).wanted and own.wants == [PATH]
    settle_wants(own, mesh, DIGESTS.get)
    assert mesh.asked == [MODEL.digest]  # once per run


def test_a_default_model_never_brings_back_a_drop_and_a_drop_ends_the_nodes_ask():
    mesh, own = WantsMesh(entry(wanted=False, counter=9, author="B")), OwnState("a", wants=[PATH], implicit=[PATH])
    assert settle_wants(own, mesh, DIGESTS.get) == {"gemma"}
    assert mesh.asked == [] and own.wants == []
    fresh, own = WantsMesh(), OwnState("a", wants=[PATH], implicit=[PATH])
    settle_wants(own, fresh, DIGESTS.get)
    assert fresh.asked == [MODEL.digest]  # a mesh with no word on it: the default is wanted
    fresh.ledger.merge(entry(wanted=False, counter=2**50, author="C"))  # a drop heard later
    assert settle_wants(own, fresh, DIGESTS.get) == {"gemma"} and own.wants == [] and fresh.asked == [MODEL.digest]


def test_a_file_not_yet_hashed_waits_for_its_digest():
    mesh, own = WantsMesh(), OwnState("a", wants=[PATH])
    settle_wants(own, mesh, {}.get)
    assert mesh.asked == [] and own.claimed == set()
    settle_wants(own, mesh, DIGESTS.get)
    assert mesh.asked == [MODEL.digest]
