"""Realistic status snapshots for the desktop views, and the pure functions that read them.

Each snapshot is written as the JSON of `/api/status` (`*_wire`) and read with
`StatusSnapshot.from_wire`, so the views' fixtures are checked against the wire as well:
`solo` is what a real node serving the bundled model answers; `split` and `waiting` are what
the mesh shows with three machines sharing a model and with too little capacity; `unplanned`
is a node whose mesh has planned nothing yet, and `starting` one that is in no mesh yet.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshdesk.core.states import ModelState, Role
from meshdesk.core.status import SnapshotError, StatusSnapshot
from meshdesk.ui.mesh_model import (TrayState, cluster_segments, mesh_summary, proportions, tray_state,
                                    waiting_reasons)
from meshdesk.ui.models_model import chat_model_choices, local_model_rows, peer_model_rows
from meshdesk.ui.text import DASH, expiry, gigabytes, layer_range, share_percent

GB = 1024 ** 3
ALICE, BOB, CAROL, DAVE = "a1" * 10, "b2" * 10, "c3" * 10, "d4" * 10
QWEN = "Qwen2.5-32B-Instruct-Q4_K_M"
GEMMA = "gemma-3-270m-q4_k_m"


def model_wire(model_id: str, state: str, path: str = "", error: str | None = None, pid: int | None = None,
               draft: str | None = None) -> dict:
    return {"id": model_id, "state": state, "path": path, "error": error, "pid": pid, "requests": 0,
            "draft": draft, "speculative": None}


def solo_wire() -> dict:
    return {
        "node": {"id": ALICE, "name": "alice", "home": "/home/alice/.local/share/meshdesk",
                 "version": "0.1.0", "role": "host"},
        "models": [model_wire(GEMMA, "ready", "/models/gemma.gguf", pid=4242)],
        "api_port": 9337,
        "plans": [{"model": GEMMA, "host": ALICE, "state": "solo",
                   "members": [{"id": ALICE, "share": 1.0, "layers": 18}], "waiting_reason": None}],
        "traffic": {"weights_sent_bytes": 0, "weights_referenced_bytes": 0, "activations_bytes": 0,
                    "round_trips": 0},
        "secrets": {"backend": "keyring (SecretService)", "warning": None},
        "offer": {"measured_bytes": 24 * GB, "cap_bytes": None, "donating": True,
                  "capacity_bytes": 24 * GB},
        "wants": [GEMMA],
        "mesh": {"id": "4b18fd3f932dfff5", "members": 1, "port": 38489, "removed_from_mesh": False},
        "peers": [],
        "refusals": [],
        "layers": {"model": "", "received_bytes": 0, "missing_bytes": 0, "receiving": False, "problem": None},
    }


def peer_wire(node_id: str, name: str, role: str, gigabytes_offered: float, rtt: float | None,
              models=()) -> dict:
    return {"id": node_id, "name": name, "role": role, "capacity_bytes": int(gigabytes_offered * GB),
            "rtt_ms": rtt, "models": list(models), "state": "alive", "last_seen_s": 0.4,
            "linked": True, "addresses": [["192.168.1.20", 38489]], "versions": {}}


def split_wire() -> dict:
    """Alice hosts a 32B model split over three machines; Dave is a lite client."""
    snapshot = solo_wire()
    snapshot["models"] = [model_wire(QWEN, "ready", f"/models/{QWEN}.gguf", pid=4242,
                                     draft="Qwen2.5-0.5B-Instruct-Q4_K_M")]
    snapshot["models"][0]["speculative"] = {
        "proposed": 800, "accepted": 496, "steps": 300, "generated": 720, "backed_off": 0, "mode": "draft",
        "draft_max": 8, "acceptance_rate": 0.62, "tokens_per_step": 2.4, "tokens_per_round_trip": 2.38}
    snapshot["wants"] = [QWEN]
    snapshot["mesh"]["members"] = 4
    advert = {"name": f"{QWEN}.gguf", "size": int(19.9 * GB), "digest": "ab" * 32}
    snapshot["peers"] = [
        peer_wire(BOB, "bob-desktop", "worker", 16, 3.2, [advert]),
        peer_wire(CAROL, "carol-laptop", "worker", 8, 11.8, [advert]),
        peer_wire(DAVE, "dave-phone", "client", 0, 24.0),
    ]
    snapshot["plans"] = [{"model": QWEN, "host": ALICE, "state": "split", "waiting_reason": None,
                          "members": [{"id": BOB, "share": 0.3333, "layers": 21},
                                      {"id": CAROL, "share": 0.1667, "layers": 11},
                                      {"id": ALICE, "share": 0.5, "layers": 32}]}]
    snapshot["traffic"] = {"weights_sent_bytes": 0, "weights_referenced_bytes": int(9.9 * GB),
                           "activations_bytes": 52_428_800, "round_trips": 1200}
    return snapshot


def waiting_wire() -> dict:
    """A 72B model that the two machines present cannot hold yet."""
    snapshot = solo_wire()
    snapshot["node"]["role"] = "standby"
    reason = "waiting for more peers: need 52.0 GB, have 36.0 GB"
    snapshot["models"] = [model_wire("Qwen2.5-72B-Instruct-Q4_K_M", "waiting", error=reason)]
    snapshot["offer"] = {"measured_bytes": 24 * GB, "cap_bytes": 20 * GB, "donating": True,
                         "capacity_bytes": 20 * GB}
    snapshot["mesh"]["members"] = 2
    snapshot["peers"] = [peer_wire(BOB, "bob-desktop", "standby", 16, 3.2)]
    snapshot["plans"] = [{"model": "Qwen2.5-72B-Instruct-Q4_K_M", "host": None, "state": "waiting",
                          "members": [], "waiting_reason": reason}]
    return snapshot


def solo() -> StatusSnapshot:
    return StatusSnapshot.from_wire(solo_wire())


def split() -> StatusSnapshot:
    return StatusSnapshot.from_wire(split_wire())


def waiting() -> StatusSnapshot:
    return StatusSnapshot.from_wire(waiting_wire())


def unplanned() -> StatusSnapshot:
    """Alice's model is ready, but the mesh has not planned anything: no plans, no role yet."""
    return replace(solo(), plans=(), node=replace(solo().node, role=Role.STANDBY))


def starting() -> StatusSnapshot:
    """A node that has just started: in no mesh, serving nothing, its API not listening yet."""
    return replace(solo(), models=(), api_port=None, plans=(), wants=(), mesh=None,
                   node=replace(solo().node, role=Role.STANDBY))


def with_model_state(snapshot: StatusSnapshot, state: ModelState, error: str | None = None) -> StatusSnapshot:
    first, *others = snapshot.models
    return replace(snapshot, models=(replace(first, state=state, error=error), *others))


def test_the_fixtures_are_the_wire_form_field_for_field():
    for wire in (solo_wire(), split_wire(), waiting_wire()):
        assert StatusSnapshot.from_wire(wire).to_wire() == wire
    assert starting().to_wire()["mesh"] is None and StatusSnapshot.from_wire(starting().to_wire()) == starting()


@pytest.mark.parametrize("broken", [
    lambda wire: wire.pop("offer"),
    lambda wire: wire["node"].update(role="boss"),
    lambda wire: wire["models"][0].update(state="asleep"),
    lambda wire: wire["models"][0].update(pid="4242"),
    lambda wire: wire["peers"][0].update(addresses=[["192.168.1.20"]]),
    lambda wire: wire["plans"][0]["members"][0].update(layers=True),
    lambda wire: wire.update(mesh=[]),
])
def test_a_snapshot_that_is_not_one_is_refused_with_the_reason(broken):
    wire = split_wire()
    broken(wire)
    with pytest.raises(SnapshotError):
        StatusSnapshot.from_wire(wire)


def test_segments_cover_every_node_with_roles_shares_and_rtt():
    segments = cluster_segments(split())
    assert [s.name for s in segments] == ["alice", "bob-desktop", "carol-laptop", "dave-phone"]
    assert [s.role for s in segments] == ["host", "worker", "worker", "client"]
    assert [s.share for s in segments] == ["50%", "33%", "17%", DASH]
    assert [s.rtt for s in segments] == ["this node", "3.2 ms", "12 ms", "24 ms"]
    assert [s.is_host for s in segments] == [True, False, False, False]
    assert segments[0].is_self and [s.layers for s in segments] == ["layers 32–63", "layers 0–20", "layers 21–31", DASH]


def test_a_solo_node_is_the_host_of_its_whole_model():
    [segment] = cluster_segments(solo())
    assert (segment.role, segment.share, segment.layers, segment.is_host) == ("host", "100%", "layers 0–17", True)
    summary = mesh_summary(solo())
    assert summary.plans == ["gemma-3-270m-q4_k_m on alice (solo)"]
    assert summary.traffic == "weights sent 0 B, by reference 0 B, activations 0 B"
    assert mesh_summary(split()).traffic == "weights sent 0 B, by reference 9.9 GB, activations 50.0 MB"


def test_a_member_without_the_file_shows_the_layers_it_receives_or_why_it_takes_none():
    wire = solo_wire()
    assert mesh_summary(StatusSnapshot.from_wire(wire)).layers == DASH
    wire["layers"] = {"model": "gemma", "received_bytes": 30 << 20, "missing_bytes": 120 << 20,
                      "receiving": True, "problem": None}
    assert mesh_summary(StatusSnapshot.from_wire(wire)).layers == "receiving layers: 30 of 120 MB"
    wire["layers"]["received_bytes"] = 120 << 20
    assert mesh_summary(StatusSnapshot.from_wire(wire)).layers.startswith("received its layers of gemma: 120 MB")
    wire["layers"]["problem"] = "no disk space for layers in /home/b/layers; serving the API as a lite member"
    assert "lite member" in mesh_summary(StatusSnapshot.from_wire(wire)).layers


def test_a_node_before_any_plan_reads_with_dashes_for_what_it_lacks():
    [segment] = cluster_segments(unplanned())
    assert (segment.name, segment.role, segment.share, segment.capacity_bytes) == ("alice", "standby", DASH, 24 * GB)
    summary = mesh_summary(unplanned())
    assert summary.draft == DASH and summary.plans == [] and summary.waiting == []
    assert summary.api == "http://127.0.0.1:9337/v1"
    assert summary.models == "gemma-3-270m-q4_k_m (ready)"


def test_a_node_that_has_just_started_is_in_no_mesh():
    assert mesh_summary(starting()).mesh == "not in a mesh yet" and mesh_summary(starting()).api == "starting…"
    assert cluster_segments(starting())[0].name == "alice"
    assert tray_state(starting()) == TrayState.NO_MESH and chat_model_choices(starting()) == []


def test_waiting_plans_explain_themselves():
    assert waiting_reasons(waiting()) == [
        "Qwen2.5-72B-Instruct-Q4_K_M: waiting for more peers: need 52.0 GB, have 36.0 GB"]
    assert tray_state(waiting()) == "loading"
    assert mesh_summary(waiting()).plans == ["Qwen2.5-72B-Instruct-Q4_K_M on — (waiting)"]
    assert mesh_summary(waiting()).models == "Qwen2.5-72B-Instruct-Q4_K_M (waiting for capacity)"
    assert [s.is_host for s in cluster_segments(waiting())] == [False, False]


def test_widths_follow_capacity_but_a_client_stays_visible():
    fractions = proportions([24 * GB, 16 * GB, 8 * GB, 0])
    assert abs(sum(fractions) - 1) < 1e-9
    assert fractions[0] > fractions[1] > fractions[2] > fractions[3] > 0.05
    assert proportions([0, 0]) == [0.5, 0.5] and proportions([]) == []


def test_tray_state_follows_models_and_mesh():
    assert tray_state(solo()) == "ready"
    assert tray_state(with_model_state(solo(), ModelState.LOADING)) == "loading"
    assert tray_state(with_model_state(solo(), ModelState.FAILED, "bad file")) == "failed"
    client = replace(unplanned(), models=())
    assert tray_state(client) == "no-mesh"
    assert tray_state(replace(client, peers=split().peers)) == "ready"
    routed = StatusSnapshot.from_wire(solo_wire() | {"models": [model_wire(QWEN, "remote")]})
    assert tray_state(routed) == "ready" and chat_model_choices(routed) == [QWEN, "gemma-3-270m-q4_k_m"]
    assert local_model_rows(routed)[0].where == "the mesh"


def test_model_rows_and_chat_choices():
    assert [r.name for r in local_model_rows(split())] == [QWEN]
    assert [(r.name, r.where, r.size) for r in peer_model_rows(split())] == [
        (QWEN, "bob-desktop", "20 GB"), (QWEN, "carol-laptop", "20 GB")]
    assert chat_model_choices(split()) == [QWEN]
    assert chat_model_choices(waiting()) == ["Qwen2.5-72B-Instruct-Q4_K_M"]
    loading_first = StatusSnapshot.from_wire(solo_wire() | {"plans": [], "models": [
        model_wire("b", "loading"), model_wire("a", "ready")]})
    assert chat_model_choices(loading_first) == ["a", "b"]


def test_text_helpers():
    assert gigabytes(None) == DASH and gigabytes(24 * GB) == "24 GB" and gigabytes(GB // 2) == "0.5 GB"
    assert share_percent(0.335) == "34%" and share_percent(67) == "67%" and share_percent(None) == DASH
    assert layer_range(12) == "12 layers" and layer_range("x") == DASH and layer_range([3, 9]) == "layers 3–9"
    assert expiry(0, 100) == "never expires" and expiry(50, 100) == "expired"
    assert expiry(100 + 3 * 3600, 100) == "expires in 3 h"
