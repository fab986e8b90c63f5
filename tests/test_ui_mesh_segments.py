"""The Mesh view's picture as pure values: layer ranges, joining states, activity from counters."""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshdesk.core.planning import Plan, PlanMember
from meshdesk.core.states import Liveness, ModelState, PlanState
from meshdesk.core.status import LayersStatus, SnapshotError, StatusSnapshot, TrafficStatus, layer_spans
from meshdesk.ui.mesh_model import mesh_summary
from meshdesk.ui.mesh_segments import ActivityWatch, SegmentState, cluster_segments, partners
from tests.test_ui_snapshots import ALICE, BOB, CAROL, DAVE, QWEN, solo, split, split_wire, starting, waiting

MB = 1024 ** 2


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def moved(snapshot: StatusSnapshot, activations: int = 0, round_trips: int = 0) -> StatusSnapshot:
    traffic = snapshot.traffic
    return replace(snapshot, traffic=replace(traffic, activations_bytes=traffic.activations_bytes + activations,
                                             round_trips=traffic.round_trips + round_trips))


@pytest.mark.parametrize("layers, spans", [
    ([21, 11, 32], {BOB: (0, 20), CAROL: (21, 31), ALICE: (32, 63)}),
    ([18], {BOB: (0, 17)}),
    ([0, 9], {CAROL: (0, 8)}),  # a member with no layers has no range
    ([], {}),
])
def test_layer_spans_are_consecutive_in_device_order(layers, spans):
    members = tuple(PlanMember(node_id, 0.5, count) for node_id, count in zip((BOB, CAROL, ALICE), layers))
    assert layer_spans(Plan(QWEN, ALICE, PlanState.SPLIT, members)) == spans


def test_each_machine_reads_its_layers_state_and_round_trip():
    segments = cluster_segments(split())
    assert [s.label_lines() for s in segments] == [
        ["alice (you) · host", "layers 32–63 · 50%", "24 GB · this node", "ready"],
        ["bob-desktop · worker", "layers 0–20 · 33%", "16 GB · 3.2 ms", "ready"],
        ["carol-laptop · worker", "layers 21–31 · 17%", "8.0 GB · 12 ms", "ready"],
        ["dave-phone · client", "no layers", "0 GB · 24 ms", "lite client"],
    ]


def test_a_peer_linked_through_a_relay_says_so_beside_its_round_trip():
    wire = split_wire()
    wire["peers"][0]["relayed"] = True
    segments = cluster_segments(StatusSnapshot.from_wire(wire))
    assert segments[1].label_lines()[2] == "16 GB · 3.2 ms via relay"
    assert segments[2].label_lines()[2] == "8.0 GB · 12 ms"


@pytest.mark.parametrize("change, own, peers", [
    (lambda wire: wire["layers"].update(model=QWEN, received_bytes=30 * MB, missing_bytes=120 * MB,
                                        receiving=True), "receiving layers 25% · 30 of 120 MB", None),
    (lambda wire: wire["models"][0].update(state="loading"), "loading", ["loading", "loading", "lite client"]),
    (lambda wire: wire["models"][0].update(state="failed"), "failed", None),
    (lambda wire: wire["layers"].update(problem="no disk space for layers"), "lite member", None),
    (lambda wire: wire["peers"][0].update(linked=False, rtt_ms=None), "ready",
     ["connecting", "ready", "lite client"]),
    (lambda wire: wire["peers"][1].update(state="suspect"), "ready", ["ready", "not answering", "lite client"]),
    (lambda wire: wire.update(plans=[]), "standing by", ["standing by", "standing by", "lite client"]),
])
def test_joining_states(change, own, peers):
    wire = split_wire()
    change(wire)
    segments = cluster_segments(StatusSnapshot.from_wire(wire))
    assert segments[0].state_text() == own
    if peers is not None:
        assert [s.state_text() for s in segments[1:]] == peers


def test_a_host_sees_its_members_receive_layers_while_it_loads():
    loading = replace(split(), models=(replace(split().models[0], state=ModelState.LOADING),),
                      layers_sent={BOB: 300 * MB, CAROL: 0})
    assert [s.state_text() for s in cluster_segments(loading)[1:]] == [
        "receiving layers · 300 MB so far", "loading", "lite client"]
    assert [s.state_text() for s in cluster_segments(replace(split(), layers_sent={BOB: 300 * MB}))[1:3]] == [
        "ready", "ready"]  # loaded: what was sent is history
    wire = loading.to_wire()
    assert wire["layers_sent"] == {BOB: 300 * MB, CAROL: 0} and "layers_sent" not in split().to_wire()
    assert StatusSnapshot.from_wire(wire) == loading


@pytest.mark.parametrize("broken", [[], {BOB: -1}, {BOB: "300"}, {BOB: True}])
def test_layers_sent_that_is_not_a_byte_count_per_member_is_refused(broken):
    with pytest.raises(SnapshotError):
        StatusSnapshot.from_wire(split_wire() | {"layers_sent": broken})


def test_receiving_layers_carries_its_progress():
    snapshot = replace(split(), layers=LayersStatus(QWEN, 90 * MB, 120 * MB))
    own = cluster_segments(snapshot)[0]
    assert (own.state, own.progress, own.detail) == (SegmentState.RECEIVING, 75, "90 of 120 MB")
    done = cluster_segments(replace(snapshot, layers=LayersStatus(QWEN, 120 * MB, 120 * MB)))[0]
    assert (done.state, done.progress) == (SegmentState.READY, None)


def test_states_before_a_mesh_and_while_waiting():
    assert cluster_segments(starting())[0].state == SegmentState.NO_MESH
    assert [s.state for s in cluster_segments(waiting())] == [SegmentState.STANDBY, SegmentState.STANDBY]
    assert mesh_summary(starting()).headline.startswith("Not in a mesh yet")
    assert mesh_summary(split()).headline == (
        f"4 machines · 48 GB pooled · serving {QWEN} split over 3 of them")
    assert mesh_summary(waiting()).headline == (
        "2 machines · 36 GB pooled · Qwen2.5-72B-Instruct-Q4_K_M waits for capacity")


def test_a_split_is_busy_together_and_a_solo_host_alone():
    assert partners(split()) == {ALICE, BOB, CAROL}
    assert partners(solo()) == {ALICE}
    assert DAVE not in partners(split())


def test_activity_follows_counters_that_move_and_stops_when_they_stop():
    clock = Clock()
    watch = ActivityWatch(hold_s=2.5)
    assert watch.see(split(), clock()) == frozenset()  # the first look has nothing to compare with
    clock.now += 1
    assert watch.see(split(), clock()) == frozenset()  # nothing moved
    clock.now += 1
    busy = watch.see(moved(split(), activations=4096, round_trips=3), clock())
    assert busy == {ALICE, BOB, CAROL}
    segments = cluster_segments(moved(split(), 4096, 3), busy)
    assert [s.active for s in segments] == [True, True, True, False]
    assert segments[1].state_text() == "● busy · ready"
    clock.now += 1
    assert watch.see(moved(split(), 4096, 3), clock()) == busy  # held a moment after the last movement
    clock.now += 2
    assert watch.busy(clock()) == frozenset()  # stopped moving for longer than the hold


def test_counters_that_went_down_are_a_restarted_node_not_activity():
    watch, clock = ActivityWatch(), Clock()
    watch.see(split(), clock())
    assert watch.see(waiting(), clock()) == frozenset()  # its traffic back at zero
    assert watch.see(moved(waiting(), activations=1), clock()) == {ALICE}


def test_an_answer_in_progress_keeps_a_solo_host_busy():
    clock = Clock()
    watch = ActivityWatch(hold_s=2.5)
    answering = replace(solo(), models=(replace(solo().models[0], generating=1),))
    watch.see(answering, clock())
    clock.now += 10
    assert watch.see(answering, clock()) == {ALICE}
    started = replace(solo(), models=(replace(solo().models[0], requests=1),))
    watch.see(solo(), clock())
    assert watch.see(started, clock()) == {ALICE}


def test_generating_is_on_the_wire_only_while_answering():
    model = solo().models[0]
    assert "generating" not in model.to_wire()
    busy = replace(model, generating=2)
    assert busy.to_wire()["generating"] == 2
    assert type(busy).from_wire(busy.to_wire()) == busy


def test_a_peer_gone_quiet_reads_as_not_answering():
    peer = replace(split().peers[0], state=Liveness.SUSPECT)
    snapshot = replace(split(), peers=(peer,))
    assert cluster_segments(snapshot)[1].state == SegmentState.NOT_ANSWERING


def test_a_waiting_model_loads():
    snapshot = replace(split(), models=(replace(split().models[0], state=ModelState.WAITING),),
                       traffic=TrafficStatus())
    assert cluster_segments(snapshot)[0].state == SegmentState.LOADING


def test_the_mesh_summary_names_the_answers_in_progress_and_the_queue():
    model = replace(solo().models[0], generating=8, queued=5, parallel=8)
    line = mesh_summary(replace(solo(), models=(model,))).models
    assert line.endswith("(ready · answering 8 of 8 · 5 waiting)"), line
    assert mesh_summary(solo()).models.endswith("(ready)")
