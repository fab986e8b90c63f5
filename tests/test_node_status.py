"""`Node.status()` gathers every section of the snapshot from the parts it is built from (the
fakes of tests/test_node.py, given a mesh status, plans and traffic)."""

from __future__ import annotations

from meshdesk.core.planning import Plan, PlanMember
from meshdesk.core.states import ModelState, PlanState, Role
from meshdesk.core.status import ModelStatus, NodeInfo, OfferStatus, SecretsNote, TrafficStatus
from meshdesk.node.mesh_status import mesh_status
from meshdesk.node.offer import GIB
from meshdesk.node.rpc_tunnel import Traffic
from tests.test_node import TINY, FakeMesh, FakeServing, make_node

ALICE = "a" * 20
REFUSAL = {"address": "10.0.0.9:4000", "reason": "another mesh", "at": 1764600000}
PLAN = Plan("tiny-q4_k_m", ALICE, PlanState.SOLO, (PlanMember(ALICE, 1.0, 18),))


class MeshWithStatus(FakeMesh):
    def status(self):
        if self.mesh_id is None:
            return mesh_status(None, 38489, False, [], [], [])
        return mesh_status(self.mesh_id, 38489, False, [], [], [REFUSAL])


class ServingWithPlans(FakeServing):
    def __init__(self, *arguments, **options):
        super().__init__(*arguments, **options)
        self.traffic = Traffic(weights_sent_bytes=1, weights_referenced_bytes=2, activations_bytes=3)
        self.plans = [PLAN]

    def plans_status(self) -> list[Plan]:
        return list(self.plans)

    def layers_sent(self) -> dict[str, int]:
        return {"b" * 20: 5}


def test_the_snapshot_has_every_section_the_parts_report():
    ready = ModelStatus("tiny-q4_k_m", str(TINY), ModelState.READY, pid=42)
    node, *_ = make_node(MeshWithStatus(), ServingWithPlans([ready], role="host"), wants=[TINY],
                         secrets_note={"backend": "keyring", "warning": None})
    node.api_port = 9337
    snapshot = node.status()
    assert snapshot.node == NodeInfo(ALICE, "alice", "/home/alice", "0.1.0", Role.HOST)
    assert snapshot.models == (ready,) and snapshot.plans == (PLAN,) and snapshot.api_port == 9337
    assert snapshot.traffic == TrafficStatus(1, 2, 3) and snapshot.secrets == SecretsNote("keyring")
    assert snapshot.offer == OfferStatus(8 * GIB, None, True, 8 * GIB) and snapshot.wants == ("tiny-q4_k_m",)
    assert snapshot.mesh.id == "0123456789abcdef" and snapshot.refusals[0].reason == "another mesh"
    assert snapshot.to_wire()["refusals"] == [REFUSAL]
    assert snapshot.layers_sent == {"b" * 20: 5}  # what the split's tunnels sent each member whole


def test_outside_a_mesh_a_lite_client_shows_its_role_and_no_mesh():
    node, *_ = make_node(MeshWithStatus(mesh_id=None), ServingWithPlans(), client=True)
    snapshot = node.status()
    assert snapshot.node.role == Role.CLIENT and snapshot.mesh is None and snapshot.secrets is None
    assert snapshot.offer.capacity_bytes == 0 and snapshot.to_wire()["mesh"] is None
