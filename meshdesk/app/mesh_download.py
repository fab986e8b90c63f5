"""Wiring for the node's automatic download of the catalog model the mesh wants it to serve solo
(`node.auto_download`): the hub transfer (`adapters.hf_download`), the disk probe, and the hand
over of the verified file to the inventory."""

from __future__ import annotations

import shutil
from pathlib import Path

from meshdesk.adapters import hf_download
from meshdesk.app.model_choice import bundled_catalog
from meshdesk.core.download_choice import DONE, DOWNLOADING, Download, describe_bytes, wanted_from
from meshdesk.core.states import Role
from meshdesk.node.auto_download import AutoDownload, AutoDownloadParts, DiskState, FetchFailed
from meshdesk.node.model_inventory import ModelInventory, cache_key

PARTIAL_SUFFIX = ".partial"


def fetcher(models_folder: Path, endpoint: str | None = None):
    """Downloads `download` into the models folder and checks it is the mesh's file (blocking)."""
    def fetch(download: Download, progress, stopped) -> Path:
        target = models_folder / download.local_file
        try:
            remote = hf_download.find_remote_file(download.repo, download.remote_file, endpoint=endpoint)
            hf_download.check_disk_space(models_folder, remote.size - hf_download.resumable_bytes(remote, target))
            return hf_download.download(remote, target, progress=progress, cancelled=stopped,
                                        expected_sha256=download.model.digest)
        except hf_download.DigestMismatch as mismatch:
            raise FetchFailed(str(mismatch), refused=True) from None
        except hf_download.DownloadError as error:
            raise FetchFailed(str(error)) from None
    return fetch


def disk_probe(models_folder: Path):
    def probe() -> DiskState:
        models_folder.mkdir(parents=True, exist_ok=True)
        partials = {path.name.removesuffix(PARTIAL_SUFFIX): path.stat().st_size
                    for path in models_folder.glob(f"*.gguf{PARTIAL_SUFFIX}")}
        return DiskState(shutil.disk_usage(models_folder).free, partials)
    return probe


def inventory_files(inventory: ModelInventory):
    """The model files the inventory knows, by name, wherever they are."""
    def files() -> dict[str, str]:
        return {Path(model["path"]).name: model["digest"] for model in inventory.models}
    return files


def inventory_taker(inventory: ModelInventory, rescan):
    """The verified file joins the inventory with its digest already known (no second hashing)."""
    async def take(path: Path, digest: str) -> None:
        inventory.cache[cache_key(path)] = digest  # lead: ModelInventory could offer `note_digest`
        await rescan(None)
    return take


def build_auto_download(arguments, models_folder: Path, inventory: ModelInventory, serving, offer, own,
                        mesh, rescan) -> AutoDownload:
    disabled = bool(arguments.client or getattr(arguments, "no_download", False))
    parts = AutoDownloadParts(
        catalog=bundled_catalog(),
        wanted=lambda: wanted_from(serving.plan.plans, mesh.alive_records()),
        local_files=inventory_files(inventory),
        serving=lambda: bool(own.wants) or serving.role(offer.client) in (Role.HOST, Role.WORKER),
        capacity_bytes=lambda: offer.capacity_bytes,
        disk=disk_probe(models_folder),
        fetch=fetcher(models_folder),
        finished=inventory_taker(inventory, rescan))
    job = AutoDownload(parts, disabled=disabled)
    serving.plan_listeners.append(job.plan_changed)
    return job


class DownloadPrinter:
    """Tells the terminal how the node's own download for the mesh goes: every tenth of the file,
    then how it ended (a node subscriber, beside `ReadinessPrinter`)."""

    def __init__(self, status):
        self.status = status  # () -> DownloadStatus | None
        self.last: tuple | None = None

    def __call__(self) -> None:
        status = self.status()
        if status is None:
            return
        shown = (status.model, status.state, status.percent // 10 if status.state == DOWNLOADING else None)
        if shown == self.last:
            return
        self.last = shown
        if status.state == DOWNLOADING:
            print(f"Downloading {status.model} for the mesh: {status.percent}% "
                  f"({describe_bytes(status.done_bytes)} of {describe_bytes(status.total_bytes)})", flush=True)
        elif status.state == DONE:
            print(f"Downloaded {status.model}; its digest is the mesh's.", flush=True)
        else:
            print(f"Not downloading {status.model}: {status.error}", flush=True)
