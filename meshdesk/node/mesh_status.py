"""The mesh part of a node's status snapshot (`/api/status`, the desktop views), as typed
values of `core.mesh_snapshot`, from what the mesh service holds."""

from __future__ import annotations

from meshdesk.core.membership import NodeRecord
from meshdesk.core.mesh_snapshot import MeshInfo, MeshStatus, PeerStatus, Refusal
from meshdesk.core.states import Liveness


def peer_status(record: NodeRecord, state: dict, rtt_ms: float | None, linked: bool,
                relayed: bool = False) -> PeerStatus:
    """`state` as `Membership.peer_states` gives it for this peer ({} when it has none)."""
    return PeerStatus(
        id=record.node_id, name=record.name, role=record.role, capacity_bytes=record.capacity_bytes,
        rtt_ms=None if rtt_ms is None else round(rtt_ms, 2),
        models=tuple(advert.to_wire() for advert in record.models),
        state=state.get("state", Liveness.ALIVE), last_seen_s=round(state.get("last_seen_s", 0.0), 2),
        linked=linked, addresses=tuple((host, port) for host, port in record.addresses),
        versions=record.versions, relayed=relayed)


def mesh_status(mesh_id: str | None, port: int | None, removed: bool, alive: list[NodeRecord],
                peers: list[PeerStatus], refusals: list) -> MeshStatus:
    """No mesh (`mesh_id` None) until this node founds or joins one. `refusals` are `Refusal`s
    or their wire dicts ({"address", "reason", "at"})."""
    mesh = None if mesh_id is None else MeshInfo(mesh_id, len(alive), port, removed)
    return MeshStatus(mesh, tuple(peers), tuple(as_refusal(refusal) for refusal in refusals))


def as_refusal(refusal) -> Refusal:
    return refusal if isinstance(refusal, Refusal) else Refusal.from_wire(refusal)


def status_of(mesh) -> MeshStatus:
    """The mesh part of the snapshot, from a MeshService: its membership, links and refusals."""
    if mesh.membership is None:
        return mesh_status(None, mesh.port, mesh.removed_from_mesh, [], [], mesh.refusals)
    now = mesh.clock()
    states = mesh.membership.peer_states(now)
    alive = mesh.membership.alive_records(now)
    peers = []
    for record in alive:
        if record.node_id != mesh.node_id:
            link = mesh.control.link_to(record.node_id)
            peers.append(peer_status(record, states.get(record.node_id, {}),
                                     None if link is None else link.rtt_ms, link is not None,
                                     link is not None and link.relayed))
    return mesh_status(mesh.mesh_id, mesh.port, mesh.removed_from_mesh, alive, peers, mesh.refusals)
