"""The mesh part of a node's status snapshot (`/api/status`, the desktop views)."""

from __future__ import annotations

from meshdesk.core.membership import NodeRecord


def peer_status(record: NodeRecord, state: dict, rtt_ms: float | None, linked: bool) -> dict:
    return {"id": record.node_id, "name": record.name, "role": record.role,
            "capacity_bytes": record.capacity_bytes,
            "rtt_ms": None if rtt_ms is None else round(rtt_ms, 2),
            "models": list(record.models), "state": state.get("state", "alive"),
            "last_seen_s": round(state.get("last_seen_s", 0.0), 2),
            "linked": linked, "addresses": [list(address) for address in record.addresses],
            "versions": record.versions}


def mesh_status(mesh_id: str | None, port: int | None, removed: bool, alive: list[NodeRecord],
                peers: list[dict], refusals: list[dict]) -> dict:
    return {
        "mesh": {"id": mesh_id, "members": len(alive), "port": port, "removed_from_mesh": removed},
        "peers": peers,
        "refusals": refusals,
    }
