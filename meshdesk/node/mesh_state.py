"""What a node remembers of its mesh between runs (`HOME/mesh.json`); secrets live elsewhere."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

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

    def remember_peer_addresses(self, addresses: list[tuple[str, int]]) -> None:
        known = [list(address) for address in addresses]
        rest = [address for address in self.peer_addresses if address not in known]
        self.peer_addresses = (known + rest)[:MAX_REMEMBERED_ADDRESSES]

    def forget_mesh(self) -> None:
        self.mesh_id = None
        self.peer_addresses, self.members, self.removed, self.revoked = [], [], [], []


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
