"""The typed status snapshot: its wire form is `/api/status` as it has always been, and the
mesh part is built from what the mesh service holds (node.mesh_status)."""

from __future__ import annotations

import json

import pytest

from meshdesk.core.mesh_snapshot import MeshStatus, ModelFile, Refusal
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.node_record import NodeRecord
from meshdesk.core.planning import Plan, PlanMember
from meshdesk.core.states import LIVENESS_STATES, ROLES, Liveness, ModelState, PlanState, Role
from meshdesk.core.status import ModelStatus, NodeInfo, SnapshotError, StatusSnapshot
from meshdesk.node.mesh_status import mesh_status, peer_status
from tests.test_ui_snapshots import solo_wire, split_wire

BOB = "b2" * 10
# The order and names of /api/status's sections, as the CLI, tests and users' scripts read them.
WIRE_SECTIONS = ["node", "models", "api_port", "plans", "traffic", "secrets", "offer", "wants", "mesh",
                 "peers", "refusals", "layers"]


def record(**overrides) -> NodeRecord:
    fields = dict(node_id=BOB, name="bob-desktop", addresses=(("192.168.1.20", 38489),),
                  capacity_bytes=16 * 2**30, models=(ModelAdvert("qwen.gguf", 123, "ab" * 32, layers=28),),
                  serving=None, role="worker", versions={"app": "0.1.0", "protocol": 1}, rtt_ms={},
                  public_key="ab" * 32, generation=1)
    return NodeRecord(**{**fields, **overrides})


def test_a_peer_reads_as_the_api_has_always_shown_it():
    peer = peer_status(record(), {"state": "suspect", "last_seen_s": 3.14159}, rtt_ms=3.2049, linked=True)
    assert peer.to_wire() == {
        "id": BOB, "name": "bob-desktop", "role": "worker", "capacity_bytes": 16 * 2**30, "rtt_ms": 3.2,
        "models": [ModelAdvert("qwen.gguf", 123, "ab" * 32, layers=28).to_wire()], "state": "suspect",
        "last_seen_s": 3.14, "linked": True, "addresses": [["192.168.1.20", 38489]],
        "versions": {"app": "0.1.0", "protocol": 1}}
    assert (peer.role, peer.state) == (Role.WORKER, Liveness.SUSPECT)
    assert peer.model_files() == (ModelFile("qwen.gguf", 123),)


def test_a_peer_not_measured_nor_timed_yet_is_alive_with_no_rtt():
    peer = peer_status(record(), {}, rtt_ms=None, linked=False)
    assert (peer.state, peer.last_seen_s, peer.rtt_ms, peer.linked) == (Liveness.ALIVE, 0.0, None, False)


def test_outside_a_mesh_the_mesh_section_is_null():
    status = mesh_status(None, 38489, False, [], [], [])
    assert status.to_wire() == {"mesh": None, "peers": [], "refusals": []}


def test_in_a_mesh_members_are_the_alive_records_and_refusals_keep_their_shape():
    refusal = {"address": "10.0.0.9:4000", "reason": "another mesh", "at": 1764600000}
    peer = peer_status(record(), {}, 1.0, True)
    status = mesh_status("4b18fd3f932dfff5", 38489, False, [record(), record(node_id="a1" * 10)], [peer],
                         [refusal])
    assert status.to_wire() == {
        "mesh": {"id": "4b18fd3f932dfff5", "members": 2, "port": 38489, "removed_from_mesh": False},
        "peers": [peer.to_wire()], "refusals": [refusal]}
    assert status.refusals == (Refusal("10.0.0.9:4000", "another mesh", 1764600000),)
    assert MeshStatus.from_wire(status.to_wire()) == status


def test_the_snapshot_keeps_the_sections_in_their_order_and_serialises_to_plain_json():
    snapshot = StatusSnapshot.from_wire(split_wire())
    wire = snapshot.to_wire()
    assert list(wire) == WIRE_SECTIONS
    assert json.loads(json.dumps(wire)) == split_wire()
    assert snapshot.plans == (Plan("Qwen2.5-32B-Instruct-Q4_K_M", "a1" * 10, PlanState.SPLIT, (
        PlanMember(BOB, 0.3333, 21), PlanMember("c3" * 10, 0.1667, 11), PlanMember("a1" * 10, 0.5, 32))),)


def test_state_names_are_their_wire_strings():
    assert json.dumps([ModelState.READY, Role.HOST, PlanState.SOLO]) == '["ready", "host", "solo"]'
    assert f"{Liveness.SUSPECT}" == "suspect" and ModelState("remote") is ModelState.REMOTE
    assert ROLES == ("host", "worker", "client", "standby")
    assert LIVENESS_STATES == ("alive", "suspect", "dead", "left", "removed")


def test_typed_values_take_their_state_names_and_refuse_others():
    assert ModelStatus("gemma", "", "loading").state is ModelState.LOADING
    assert NodeInfo("x", "alice", "/h", "0.1.0", "client").role is Role.CLIENT
    with pytest.raises(ValueError):
        ModelStatus("gemma", "", "asleep")


@pytest.mark.parametrize("section, value", [
    ("api_port", "9337"), ("wants", "gemma"), ("traffic", None), ("secrets", {"backend": 3}),
    ("offer", {"measured_bytes": True, "cap_bytes": None, "donating": True, "capacity_bytes": 0}),
])
def test_a_malformed_section_is_a_snapshot_error(section, value):
    with pytest.raises(SnapshotError, match=section):
        StatusSnapshot.from_wire(solo_wire() | {section: value})


def test_a_node_without_a_secret_store_to_describe_shows_empty_secrets():
    snapshot = StatusSnapshot.from_wire(solo_wire() | {"secrets": {}})
    assert snapshot.secrets is None and snapshot.to_wire()["secrets"] == {}
