"""The Models tab's downloads and model list: catalog models fetched by the hf_download adapter in
worker threads, with progress, cancel and resume, and the models folder listed off the GUI thread.

Progress comes from the transfer thread; `ProgressRelay` hands about a thousand reports per
download to the event loop with `call_soon_threadsafe`, and on the desktop that loop is Qt's
(qasync), so the view is only ever touched from the GUI thread. Cancel sets an event that the
adapter checks with every chunk; the partial file stays, and Resume carries on from it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from meshdesk.adapters import hf_download
from meshdesk.app.model_choice import find_catalog_file, model_folders
from meshdesk.app.model_commands import gguf_problem
from meshdesk.app.model_listing import Capacity, model_rows
from meshdesk.core.catalog import Catalog, CatalogEntry
from meshdesk.core.download_choice import DONE, DOWNLOADING, DownloadStatus
from meshdesk.ui.model_table import STOPPING, DownloadProgress

log = logging.getLogger(__name__)

REPORTS_PER_DOWNLOAD = 1000
UNJUDGED = Capacity(node_bytes=0, mesh_bytes=None, mesh_members=None)  # the view judges fit itself


class ProgressRelay:
    """A progress callback for the transfer thread that forwards to `deliver` on the loop,
    whenever another thousandth of the file has arrived (and at the end)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[int, int], None]):
        self.loop, self.deliver, self.last_step = loop, deliver, -1

    def __call__(self, done: int, total: int) -> None:
        step = done * REPORTS_PER_DOWNLOAD // total if total else 0
        if step != self.last_step or done == total:
            self.last_step = step
            try:
                self.loop.call_soon_threadsafe(self.deliver, done, total)
            except RuntimeError:  # the loop closed: the app is ending
                pass


@dataclass
class Running:
    entry: CatalogEntry
    target: Path
    stop: threading.Event
    progress: DownloadProgress


class DownloadController:
    def __init__(self, view, catalog: Catalog, models_folder: Path,
                 rescan: Callable[[Path], Awaitable[None]], endpoint: str | None = None):
        self.view = view
        self.catalog = catalog
        self.models_folder = models_folder
        self.folders = model_folders(models_folder)
        self.rescan = rescan        # tells the node a model file arrived
        self.endpoint = endpoint    # another hub than HF_ENDPOINT's (tests)
        self.running: dict[str, Running] = {}
        self.tasks: set[asyncio.Task] = set()
        self.mesh_download: DownloadStatus | None = None  # the node's own, for the mesh (node.auto_download)
        view.download_requested.connect(self.start)
        view.resume_requested.connect(self.start)
        view.cancel_requested.connect(self.cancel)
        view.shown.connect(lambda: self.run(self.refresh_listing()))

    # --- intents -------------------------------------------------------------------------

    def start(self, name: str, with_draft: bool = False) -> None:
        """Downloads (or resumes) a catalog model, and its paired draft when asked to."""
        entry = self.catalog.resolve(name)
        if entry is None:
            self.view.show_message(f"{name} is not in the catalog.")
            return
        draft = self.catalog.draft_for(entry) if with_draft else None
        for wanted in (entry, draft):
            if wanted is not None and self._needs_download(wanted):
                self._launch(wanted)

    def _needs_download(self, entry: CatalogEntry) -> bool:
        return not entry.bundled and entry.name not in self.running and not self._mesh_downloads(entry) and \
            find_catalog_file(entry, self.folders) is None

    def _mesh_downloads(self, entry: CatalogEntry) -> bool:
        """The node downloads this one for the mesh already (one writer per partial file)."""
        mesh = self.mesh_download
        return mesh is not None and mesh.state == DOWNLOADING and mesh.model in entry.local_files()

    def cancel(self, name: str) -> None:
        running = self.running.get(name)
        if running is not None:
            running.stop.set()
            running.progress = replace(running.progress, state=STOPPING)
            self._show_downloads()

    def close(self) -> None:
        """Stops every transfer at its next chunk (keeping the partial files); the app is ending."""
        for running in self.running.values():
            running.stop.set()
        for task in list(self.tasks):
            task.cancel()

    # --- the work ------------------------------------------------------------------------

    def _launch(self, entry: CatalogEntry) -> None:
        target = self.models_folder / entry.local_file()
        running = Running(entry, target, threading.Event(), DownloadProgress(entry.name))
        self.running[entry.name] = running
        self._show_downloads()
        self.run(self._download(running))

    async def _download(self, running: Running) -> None:
        relay = ProgressRelay(asyncio.get_running_loop(), lambda done, total: self._progressed(running, done, total))
        name, finished = running.entry.name, False
        try:
            await asyncio.to_thread(self._fetch, running, relay)
            message, finished = f"Downloaded {name} to {running.target}.", True
        except hf_download.DownloadError as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001 - the row must not stay "downloading" for good
            log.exception("download of %s failed", name)
            message = f"download of {name} failed: {error}"
        await self.refresh_listing()
        self.running.pop(name, None)
        self._show_downloads()
        self.view.show_message(message)
        if finished:
            await self.rescan(running.target)

    def _fetch(self, running: Running, report: ProgressRelay) -> None:
        """In a worker thread: ask the hub, check the disk, transfer; raises DownloadError."""
        remote = hf_download.find_remote_file(running.entry.repo, running.entry.default_quant.file,
                                              endpoint=self.endpoint)
        missing = remote.size - hf_download.resumable_bytes(remote, running.target)
        hf_download.check_disk_space(self.models_folder, missing)
        hf_download.download(remote, running.target, progress=report, check=gguf_problem,
                             cancelled=running.stop.is_set)

    def _progressed(self, running: Running, done: int, total: int) -> None:
        if self.running.get(running.entry.name) is running:
            running.progress = replace(running.progress, done=done, total=total)
            self._show_downloads()

    def show_mesh_download(self, status: DownloadStatus | None) -> None:
        """The node's own download of a model the mesh wants it to serve, beside the user's: a
        progress bar while it runs, then one line saying how it ended."""
        previous, self.mesh_download = self.mesh_download, status
        if status == previous:
            return
        self._show_downloads()
        if status is None or status.state == DOWNLOADING:
            return
        if previous is None or (previous.model, previous.state) != (status.model, status.state):
            self.view.show_message(f"Downloaded {status.model} for the mesh; this node serves it."
                                   if status.state == DONE else status.error or f"{status.model}: {status.state}")
            if status.state == DONE:
                self.run(self.refresh_listing())

    def _show_downloads(self) -> None:
        downloads = {name: running.progress for name, running in self.running.items()}
        mesh = self.mesh_download
        found = self.catalog.by_local_file(mesh.model) if mesh is not None and mesh.state == DOWNLOADING else None
        if found is not None and found[0].name not in downloads:
            downloads[found[0].name] = DownloadProgress(found[0].name, mesh.done_bytes, mesh.total_bytes or None)
        self.view.show_downloads(downloads)

    async def refresh_listing(self) -> None:
        """Lists the catalog and the models folders for the view, in a worker thread."""
        try:
            listing = await asyncio.to_thread(model_rows, self.catalog, self.folders, UNJUDGED)
        except OSError as error:
            self.view.show_message(f"Cannot read the models folder: {error}")
            return
        self.view.show_catalog(listing)

    # --- tasks ---------------------------------------------------------------------------

    def run(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait(self) -> None:
        """Until every download has ended (tests; the app lets them run)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
