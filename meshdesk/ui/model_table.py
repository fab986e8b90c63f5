"""The Models tab's table: catalog and local models, with what can be done to each (pure).

The app lists the models folder (`app.model_listing.model_rows`: catalog entries and other GGUF
files, as plain dicts) and reports running downloads; fit labels are judged here against the
snapshot's offers, so they follow the capacity slider and peers joining without another look
at the disk: "fits here" / "too large" for this node alone, and comfortable / snug / too big
for the mesh's pooled capacity (`mesh_fit`). A Qt-free view model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from meshdesk.core.catalog import fit_label, needed_bytes
from meshdesk.core.states import Liveness
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.mesh_model import load_parts
from meshdesk.ui.text import DASH, byte_size, text_or_dash

DOWNLOADING, STOPPING = "downloading", "stopping"
COMFORTABLE, SNUG, TOO_BIG = "comfortable", "snug", "too big"
# Comfortable while the model (weights x 1.1 for compute buffers, plus its KV cache: what the
# planner counts) takes at most this share of the pool: a quarter stays free, so a machine that
# leaves or a cap lowered by a few GB does not stop it. Snug up to the whole pool; too big beyond.
COMFORTABLE_SHARE = 0.75
FIT_NOTE = ("The model's memory (weights and KV cache) against what the whole mesh pools: comfortable "
            "up to three quarters of it, snug up to all of it, too big beyond.")


@dataclass(frozen=True)
class DownloadProgress:
    """A download the app is running: bytes so far and the total, once the hub has said it."""

    name: str
    done: int = 0
    total: int | None = None
    state: str = DOWNLOADING  # or STOPPING, after Cancel until the transfer thread lets go

    @property
    def percent(self) -> int:
        return min(100, self.done * 100 // self.total) if self.total else 0


@dataclass(frozen=True)
class ModelTableRow:
    name: str
    quant: str
    size: str
    draft: str
    on_disk: str
    fit_here: str
    fit_mesh: str
    serving: str
    model_id: str | None = None     # the file's stem: what the node serves and drops it by
    serve_target: str | None = None  # what Serve sends: the file, or the catalog name
    draft_name: str | None = None    # the paired draft, which Download can fetch as well
    progress: int | None = None      # percent, while a download runs
    can_download: bool = False
    can_resume: bool = False
    can_cancel: bool = False
    can_serve: bool = False
    can_drop: bool = False

    def cells(self) -> tuple[str, ...]:
        return (self.name, self.quant, self.size, self.draft, self.on_disk, self.fit_here,
                self.fit_mesh, self.serving)


HEADERS = ["Model", "Quant", "Size", "Draft", "On disk", "This node", "This mesh", "Serving"]


def mesh_fit(model_bytes: int, kv_bytes: int, pooled_bytes: int) -> str:
    """comfortable / snug / too big: the model's need against the mesh's pooled capacity."""
    needed = needed_bytes(model_bytes, kv_bytes)
    if pooled_bytes > 0 and needed <= pooled_bytes * COMFORTABLE_SHARE:
        return COMFORTABLE
    return SNUG if 0 < needed <= pooled_bytes else TOO_BIG


def capacities(snapshot: StatusSnapshot) -> tuple[int, int]:
    """What this node offers, and what the mesh offers: this node and every live peer."""
    own = snapshot.offer.capacity_bytes
    return own, own + sum(peer.capacity_bytes for peer in snapshot.peers if peer.state == Liveness.ALIVE)


def model_table(listing: list[dict], snapshot: StatusSnapshot | None,
                downloads: dict[str, DownloadProgress]) -> list[ModelTableRow]:
    """`snapshot` is None before the node's first status: nothing offered, served or asked for."""
    if snapshot is None:
        node_bytes, mesh_bytes, states, wants = 0, 0, {}, set()
    else:
        node_bytes, mesh_bytes = capacities(snapshot)
        states = {model.id: " · ".join([model.state.value, *load_parts(model)]) for model in snapshot.models}
        wants = set(snapshot.wants)
    return [table_row(row, downloads.get(str(row.get("name"))), node_bytes, mesh_bytes, states, wants)
            for row in listing if isinstance(row, dict)]


def table_row(row: dict, download: DownloadProgress | None, node_bytes: int, mesh_bytes: int,
              states: dict[str, str], wants: set[str]) -> ModelTableRow:
    path = row.get("path")
    model_id = PurePath(path).stem if path else None
    on_disk = bool(row.get("downloaded"))
    partial = not on_disk and bool(row.get("partial_bytes"))
    fetchable = bool(row.get("in_catalog")) and not row.get("bundled") and not on_disk and download is None
    return ModelTableRow(
        name=text_or_dash(row.get("name")), quant=text_or_dash(row.get("quant")),
        size=byte_size(row.get("size_bytes")), draft=draft_text(row), on_disk=disk_text(row, download),
        fit_here=fit_text(row, node_bytes), fit_mesh=mesh_fit_text(row, mesh_bytes),
        serving=serving_text(model_id, states, wants), model_id=model_id,
        serve_target=path or (row.get("name") if row.get("bundled") else None),
        draft_name=row.get("draft") or None,
        progress=download.percent if download else None,
        can_download=fetchable and not partial, can_resume=fetchable and partial,
        can_cancel=download is not None and download.state == DOWNLOADING,
        can_serve=on_disk and model_id not in wants and not row.get("error"),
        can_drop=model_id is not None and model_id in wants)


def draft_text(row: dict) -> str:
    if row.get("draft"):
        return str(row["draft"])
    return "none (MoE)" if row.get("moe") else DASH


def disk_text(row: dict, download: DownloadProgress | None) -> str:
    if download is not None:
        return "stopping…" if download.state == STOPPING else f"downloading {download.percent}%"
    if row.get("bundled"):
        return "built in"
    if row.get("downloaded"):
        if row.get("error"):
            return "unreadable"
        return "yes" if row.get("in_catalog") else "local"
    partial, size = row.get("partial_bytes"), row.get("size_bytes")
    if isinstance(partial, int) and partial > 0 and isinstance(size, int) and size > 0:
        return f"partial {min(99, partial * 100 // size)}%"
    return "no"


def needs(row: dict) -> tuple[int, int] | None:
    size, kv = row.get("size_bytes"), row.get("kv_cache_bytes")
    if type(size) is not int or type(kv) is not int or size <= 0 or kv < 0:
        return None
    return size, kv


def fit_text(row: dict, node_bytes: int) -> str:
    known = needs(row)
    return DASH if known is None else fit_label(*known, node_bytes)


def mesh_fit_text(row: dict, mesh_bytes: int) -> str:
    known = needs(row)
    return DASH if known is None else mesh_fit(*known, mesh_bytes)


def serving_text(model_id: str | None, states: dict[str, str], wants: set[str]) -> str:
    if model_id is None:
        return DASH
    if model_id in states:
        return states[model_id]
    return "asked" if model_id in wants else DASH
