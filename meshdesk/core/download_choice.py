"""Which catalog model a node should download to serve solo, and how its download stands (pure).

A node that joined without a model is assigned one of the mesh's wanted models only when the
file is on its disk (`core.assignment`). When none is, `choose_download` picks a catalog model
to fetch whole from the hub, as mesh-llm does: one the mesh wants, that the catalog knows by
the file name the mesh advertises (files are saved as `{name}-{quant}.gguf`, so a model has
the same name on every node), that fits this node alone and is not forced to split, with room
on this disk; the least served first. A node that serves something, a lite client, or one
started with `--no-download` downloads nothing. The finished file must have the digest the
mesh advertises; one that does not is refused for good (`refused`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshdesk.core import snapshot_fields as read
from meshdesk.core.catalog import Catalog
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.planning import WAITING, ModelNeeds, needed_bytes

# How a download stands, in /api/status "download".state
DOWNLOADING = "downloading"
DONE = "done"          # verified, handed to the inventory
FAILED = "failed"      # the hub or the disk failed; tried again later
REFUSED = "refused"    # the file was not the mesh's (another digest): never used
BLOCKED = "blocked"    # a wanted model this node would download, but it cannot (disk space)
STOPPED = "stopped"    # the mesh stopped wanting it mid-way; the partial file stays
DOWNLOAD_STATES = (DOWNLOADING, DONE, FAILED, REFUSED, BLOCKED, STOPPED)


@dataclass(frozen=True)
class MeshModel:
    """A model the mesh wants, as its adverts tell it, and how many hosts serve it now."""

    name: str    # the file name, e.g. "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"
    size: int
    digest: str
    layers: int = 1
    force_split: bool = False
    hosts: int = 0
    kv_bytes: int = 0  # its KV cache at the mesh's context (`ModelAdvert.needs`), 0 if unknown


@dataclass(frozen=True)
class NodeSide:
    """This node, as far as the choice needs it."""

    capacity_bytes: int
    free_disk_bytes: int
    files: Mapping[str, str]  # file name in the models folder -> its digest
    serving: bool  # it hosts or works for a plan, or asks the mesh to serve its own model
    disabled: bool = False  # --client or --no-download
    partial_bytes: Mapping[str, int] = field(default_factory=dict)  # file name -> bytes already here
    refused: Mapping[str, str] = field(default_factory=dict)  # digest -> why it is never downloaded


@dataclass(frozen=True)
class Download:
    model: MeshModel
    repo: str
    remote_file: str  # the file in the hub repo
    local_file: str   # what it is saved as: the name the mesh advertises
    quant: str


@dataclass(frozen=True)
class DownloadChoice:
    download: Download | None
    blocked: tuple[tuple[str, str], ...] = ()  # (file name, why not) for wanted models it cannot take


NO_DOWNLOAD = DownloadChoice(None)


def choose_download(wanted: Sequence[MeshModel], node: NodeSide, catalog: Catalog) -> DownloadChoice:
    if node.disabled or node.serving or node.capacity_bytes <= 0:
        return NO_DOWNLOAD
    held = set(node.files.values())
    if any(model.digest in held for model in wanted):
        return NO_DOWNLOAD  # the planner assigns that one; nothing to fetch
    candidates: list[tuple[int, int, Download]] = []
    blocked: list[tuple[str, str]] = []
    for index, model in enumerate(wanted):
        download = catalog_download(model, catalog)
        if download is None or model.force_split:
            continue
        if needed_bytes(ModelNeeds(model.name, model.size, model.layers)) + model.kv_bytes > node.capacity_bytes:
            continue  # not solo here: a split plan may still use this node
        why_not = _why_not(model, download, node)
        if why_not:
            blocked.append((model.name, why_not))
        else:
            candidates.append((model.hosts, index, download))
    chosen = min(candidates, key=lambda candidate: candidate[:2])[2] if candidates else None
    return DownloadChoice(chosen, tuple(blocked))


def catalog_download(model: MeshModel, catalog: Catalog) -> Download | None:
    """Where the hub has the file the mesh advertises as `model.name`, if the catalog knows it."""
    found = catalog.by_local_file(model.name)
    if found is None or found[0].bundled or found[0].repo is None:
        return None
    entry, quant = found
    return Download(model, entry.repo, entry.quant(quant).file, entry.local_file(quant), quant)


def _why_not(model: MeshModel, download: Download, node: NodeSide) -> str | None:
    if model.digest in node.refused:
        return node.refused[model.digest]
    if any(name.lower() == download.local_file.lower() for name in node.files):
        return (f"a different file named {download.local_file} is in the models folder "
                "(its digest is not the mesh's); it is not replaced")
    missing = model.size - min(node.partial_bytes.get(download.local_file, 0), model.size)
    if missing > node.free_disk_bytes:
        return (f"not enough disk space to download {download.local_file}: it needs "
                f"{describe_bytes(missing)}, only {describe_bytes(node.free_disk_bytes)} free")
    return None


def describe_bytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


# ---------------------------------------------------------------- from the mesh's plans


def wanted_from(plans: Mapping[str, Sequence], records: Iterable) -> list[MeshModel]:
    """The wanted models of a serving plan (`ServingPlan.plans`: digest -> plans), described by
    the adverts of alive records (`NodeRecord`s) that hold the file. A digest nobody alive
    advertises is left out: there is no size or name to download it by."""
    records = list(records)
    found = []
    for digest, digest_plans in plans.items():
        adverts = [advert for record in records for advert in record.models if advert.digest == digest]
        if not adverts:
            continue
        advert: ModelAdvert = adverts[0]
        hosts = len({plan.host for plan in digest_plans if plan.state != WAITING and plan.host})
        found.append(MeshModel(advert.name, advert.size, digest, advert.layers or 1,
                               any(each.force_split for each in adverts if each.wanted), hosts,
                               advert.needs().kv_bytes))
    return found


# ---------------------------------------------------------------- how it stands


@dataclass(frozen=True)
class DownloadStatus:
    """The catalog model this node downloads (or could not) to serve: /api/status "download"."""

    model: str  # the file name
    state: str  # one of DOWNLOAD_STATES
    done_bytes: int = 0
    total_bytes: int = 0
    error: str | None = None

    @property
    def percent(self) -> int:
        return min(100, self.done_bytes * 100 // self.total_bytes) if self.total_bytes else 0

    def to_wire(self) -> dict:
        return {"model": self.model, "state": self.state, "done_bytes": self.done_bytes,
                "total_bytes": self.total_bytes, "error": self.error}

    @classmethod
    def from_wire(cls, data: object, what: str = "download") -> DownloadStatus | None:
        if data is None:
            return None
        data = read.section(data, what)
        state = read.text(data, "state", what)
        if state not in DOWNLOAD_STATES:
            raise read.SnapshotError(f"{what} state {state!r} is not one of {', '.join(DOWNLOAD_STATES)}")
        return cls(read.text(data, "model", what), state, read.whole(data, "done_bytes", what),
                   read.whole(data, "total_bytes", what), read.optional_text(data, "error", what))
