"""What a node remembers of its mesh between runs (`HOME/mesh.json`); secrets live elsewhere."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from meshdesk.core import authority
from meshdesk.core.membership import Membership

log = logging.getLogger(__name__)

STATE_FILE = "mesh.json"
MAX_REMEMBERED_ADDRESSES = 64


@dataclass
class MeshMemory:
    mesh_id: str | None = None
    port: int | None = None                      # the last port bound, reused for stable invites
    advertised: list[list] = field(default_factory=list)     # our own [host, port] pairs
    peer_addresses: list[list] = field(default_factory=list)  # where members were last seen
    members: list[str] = field(default_factory=list)          # node ids known to belong
    removed: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    authority: str | None = None    # the founder's node key (hex): who may remove and revoke
    entries: list[dict] = field(default_factory=list)  # signed removals, revocations, admin grants
    wants: list[dict] = field(default_factory=list)    # the models the mesh serves or dropped (`core.wants`)

    def remember_peer_addresses(self, addresses: list[tuple[str, int]]) -> None:
        known = [list(address) for address in addresses]
        rest = [address for address in self.peer_addresses if address not in known]
        self.peer_addresses = (known + rest)[:MAX_REMEMBERED_ADDRESSES]

    def forget_mesh(self) -> None:
        self.mesh_id = None
        self.peer_addresses, self.members, self.removed, self.revoked = [], [], [], []
        self.authority, self.entries, self.wants = None, [], []

    def may_decide(self, public_key: bytes) -> bool:
        """Whether the node with `public_key` may remove and revoke, as this memory tells it:
        the founder, or an admin the founder named (`core.authority`; the node checks again)."""
        key = public_key.hex()
        return key == self.authority or any(
            isinstance(entry, dict) and entry.get("kind") == authority.ADMIN and entry.get("subject") == key
            and entry.get("by") == self.authority for entry in (self.entries if isinstance(self.entries, list) else []))

    def remember_decisions(self, membership: Membership) -> None:
        self.authority = membership.authority.authority
        self.entries = [entry.to_wire() for entry in membership.authority.entries()]
        self.removed = sorted(membership.removed_node_ids)
        self.revoked = sorted(membership.revoked_token_ids)
        self.wants = [entry.to_wire() for entry in membership.wants.entries()]


def restore_decisions(membership: Membership, memory: MeshMemory, now: float) -> None:
    """Gives a new Membership the signed entries and the mesh's wants remembered, then the
    removals and revocations asked for while the node was stopped (`meshdesk remove`), if this
    node may make them. (The node's own asks are squared with the wants later, after every
    mesh change: `node.own_state.settle_wants`.)"""
    membership.restore_entries(now, memory.entries)
    membership.restore_wants(now, memory.wants)
    asks = [(membership.remove, node_id) for node_id in memory.removed]
    asks += [(membership.revoke_token, token_id) for token_id in memory.revoked]
    for ask, subject in asks:
        try:
            ask(now, subject)
        except ValueError as refusal:  # NotAuthorised, or our own id
            log.warning("not applying %s %s: %s", ask.__name__, subject[:40], refusal)


def load_memory(home: Path) -> MeshMemory:
    path = home / STATE_FILE
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return MeshMemory()
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable %s: %s", path, error)
        return MeshMemory()
    if not isinstance(stored, dict):
        return MeshMemory()
    known = {name for name in MeshMemory.__dataclass_fields__}
    try:
        return MeshMemory(**{key: value for key, value in stored.items() if key in known})
    except TypeError:
        return MeshMemory()


def save_memory(home: Path, memory: MeshMemory) -> None:
    path = home / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(memory), indent=1))
    os.replace(temporary, path)


def save_memory_or_warn(home: Path, memory: MeshMemory) -> None:
    """For a running node: a failure (a full disk, a removed home) is logged, never raised."""
    try:
        save_memory(home, memory)
    except OSError as error:
        log.warning("cannot save mesh state: %s", error)
