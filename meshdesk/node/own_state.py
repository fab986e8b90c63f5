"""What this node currently is and asks for, as its own gossip record tells the mesh."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshdesk.core.states import Role

log = logging.getLogger(__name__)

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
    implicit: list[Path] = field(default_factory=list)  # wants chosen by default, not named by `--model`
    claimed: set[Path] = field(default_factory=set)     # wants this run has told the mesh of


def settle_wants(own: OwnState, mesh, digest_of: Callable[[Path], str | None]) -> set[str]:
    """Squares this node's own asks with the mesh's wants (`MeshService.mesh_wants`), after
    every mesh change; returns the ids of the models it no longer asks for.

    - A model named at start (`--model X`) is an explicit act: once its digest is known, it gets
      a fresh want, newer than any drop the mesh remembers (as a restart of mesh-llm with
      `--model X` serves X). A model chosen by default (no `--model`) is wanted only when the
      mesh has no word on it yet, so a restart never brings back a dropped model by itself.
    - A model the mesh has dropped (on any node) is no longer asked for; a later serve, or a
      start with `--model`, asks again. This node's record never undoes a drop.
    """
    entries = {entry.digest: entry for entry in mesh.mesh_wants() or ()}
    for path in own.wants:
        digest = digest_of(path)
        if digest is None or path in own.claimed:
            continue
        own.claimed.add(path)
        if path not in own.implicit or digest not in entries:
            try:
                mesh.want_model(digest)
            except ValueError as refusal:  # not in the record yet, or the ledger full: next change
                own.claimed.discard(path)
                log.warning("cannot ask the mesh to serve %s yet: %s", path.name, refusal)
            entries = {entry.digest: entry for entry in mesh.mesh_wants() or ()}
    dropped = [path for path in own.wants if path in own.claimed
               and (entry := entries.get(digest_of(path) or "")) is not None and not entry.wanted]
    own.wants = [path for path in own.wants if path not in dropped]
    return {path.stem for path in dropped}
