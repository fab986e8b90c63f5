"""What `meshdesk models` shows: catalog and local models, on disk or not, and where they fit.

A model needs its weights plus the KV cache for the context the node serves with
(`assembly.DEFAULT_CONTEXT`). "This node" is the memory it offers (`capacity_bytes`); "the
mesh" adds every member's offer, read from the running node of this home, if there is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from meshdesk.adapters.gguf_metadata import ModelFileError, read_kv_bytes_per_token, read_model_info
from meshdesk.adapters.hf_download import partial_path
from meshdesk.app.assembly import DEFAULT_CONTEXT
from meshdesk.app.home import Home
from meshdesk.app.model_choice import find_catalog_file
from meshdesk.app.command_line import CommandFailed
from meshdesk.app.running_node import running_node
from meshdesk.core.catalog import Catalog, CatalogEntry, entry_kv_cache_bytes, fit_label, kv_cache_bytes
from meshdesk.core.status import StatusSnapshot

QUANT_IN_NAME = re.compile(r"[-_.]((?:I?Q\d[A-Z0-9_]*?)|BF16|F16|F32)$", re.IGNORECASE)


@dataclass(frozen=True)
class Capacity:
    node_bytes: int
    mesh_bytes: int | None   # None: no running node to ask
    mesh_members: int | None

    def labels(self, model_bytes: int, kv_bytes: int) -> dict:
        here = fit_label(model_bytes, kv_bytes, self.node_bytes)
        mesh = None if self.mesh_bytes is None else fit_label(model_bytes, kv_bytes, self.node_bytes,
                                                               self.mesh_bytes)
        return {"fit_here": here, "fit_mesh": mesh, "fit": mesh or here}


def running_node_status(home: Home) -> StatusSnapshot | None:
    """The status of this home's running node; None when none answers, or when what answers is
    not a status snapshot of this version (SnapshotError is a ValueError)."""
    node = running_node(home)
    if node is None:
        return None
    try:
        return StatusSnapshot.from_wire(node.request("/api/status", timeout=5))
    except (CommandFailed, OSError, ValueError):
        return None


def mesh_capacity(status: StatusSnapshot) -> tuple[int, int]:
    """Total capacity and member count: the node's own offer and every peer's."""
    offers = [status.offer.capacity_bytes] + [peer.capacity_bytes for peer in status.peers]
    return sum(offers), len(offers)


def catalog_row(entry: CatalogEntry, catalog: Catalog, folders: list[Path], capacity: Capacity) -> dict:
    path = find_catalog_file(entry, folders)
    quant = catalog.by_local_file(path.name)[1] if path else entry.default_quant.name
    size = path.stat().st_size if path else entry.quant(quant).size_bytes
    kv_bytes = entry_kv_cache_bytes(entry, DEFAULT_CONTEXT)
    partial = partial_path(folders[0] / entry.local_file())
    return {
        "name": entry.name, "aliases": list(entry.aliases), "in_catalog": True, "bundled": entry.bundled,
        "quant": quant, "quants": [q.name for q in entry.quants], "size_bytes": size,
        "kv_cache_bytes": kv_bytes, "layers": entry.layers, "context_length": entry.context_length,
        "moe": entry.moe, "draft": entry.draft, "repo": entry.repo,
        "downloaded": path is not None or entry.bundled, "path": str(path) if path else None,
        "partial_bytes": partial.stat().st_size if partial.is_file() else 0,
        "description": entry.description, **capacity.labels(size, kv_bytes),
    }


def local_row(path: Path, capacity: Capacity) -> dict:
    """A GGUF file in a models folder that the catalog does not know."""
    row = {"name": path.stem, "aliases": [], "in_catalog": False, "bundled": False, "quant": quant_in_name(path),
           "size_bytes": path.stat().st_size, "draft": None, "downloaded": True, "path": str(path)}
    try:
        info, per_token = read_model_info(path), read_kv_bytes_per_token(path)
    except ModelFileError as error:
        return {**row, "error": str(error), "fit_here": None, "fit_mesh": None, "fit": None}
    context = min(DEFAULT_CONTEXT, info.context_length or DEFAULT_CONTEXT)
    # the header's KV heads, as the planner counts them; else every head its own K and V (an upper bound)
    kv_bytes = (per_token * context if per_token is not None
                else kv_cache_bytes(info.layer_count or 0, info.embedding_length or 0, context))
    return {**row, "kv_cache_bytes": kv_bytes, "layers": info.layer_count, "context_length": info.context_length,
            "moe": bool(info.expert_count), **capacity.labels(info.size_bytes, kv_bytes)}


def quant_in_name(path: Path) -> str | None:
    match = QUANT_IN_NAME.search(path.stem)
    return match.group(1).upper() if match else None


def model_rows(catalog: Catalog, folders: list[Path], capacity: Capacity) -> list[dict]:
    """Catalog models first (in catalog order), then other GGUF files found in `folders`."""
    rows = [catalog_row(entry, catalog, folders, capacity) for entry in catalog.entries]
    claimed = {Path(row["path"]).resolve() for row in rows if row["path"]}
    for folder in folders:
        for path in sorted(folder.glob("*.gguf")) if folder.is_dir() else []:
            if path.resolve() not in claimed and catalog.by_local_file(path.name) is None:
                claimed.add(path.resolve())
                rows.append(local_row(path, capacity))
    return rows
