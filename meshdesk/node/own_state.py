"""What this node currently is and asks for, as its own gossip record tells the mesh."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meshdesk.core.states import Role

STANDBY = Role.STANDBY


@dataclass
class OwnState:
    """This node's name, the model files it asks the mesh to serve (its own first) and its role.

    `Node` is the only writer (on rename, serve and drop, and after each replan); the source of
    the own gossip record reads it afresh each time the mesh asks. It exists to keep
    construction one-way: the mesh needs that source when it is built, while these values are
    changed later by `Node` and computed by `Serving`, which both need the mesh. So it is the
    one piece of mutable state they share, and it holds plain values only.
    """

    name: str
    wants: list[Path] = field(default_factory=list)
    role: Role = Role.STANDBY  # until the node notes the role its first plans give it
