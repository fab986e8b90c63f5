"""A node's side job: download the catalog model the mesh wants this node to serve solo.

After every replan it asks `core.download_choice` whether to fetch a model; when so, the app's
`fetch` (a blocking call, run in a thread) downloads it with progress and checks that the file's
digest is the one the mesh advertises, then `finished` hands the file to the inventory, whose
rescan puts it in this node's record: the next plan assigns it here. The job never uses a half
file: the adapter writes a `.partial` file and renames it only once it is verified, and a node
that stops mid-download stops the transfer at its next chunk, keeping the partial for the next
run to resume. A file with another digest is refused for good; other failures are tried again
after `retry_s`, doubling with each failure up to `MAX_RETRY_SECONDS`; a model blocked (no disk
space) is looked at again every `retry_s`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from meshdesk.core.catalog import Catalog
from meshdesk.core.download_choice import (BLOCKED, DONE, DOWNLOADING, FAILED, REFUSED, STOPPED, Download,
                                           DownloadStatus, MeshModel, NodeSide, choose_download, describe_bytes)

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 600.0
STATUS_STEPS = 200   # status updates per download (every half percent)
LOG_STEPS = 10       # log lines per download (every 10 %)
UNWANTED = "the mesh no longer wants it; the partial file stays for a later resume"


class FetchFailed(Exception):
    """A download that did not give the mesh's file; `refused` when the file was another one."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class DiskState:
    free_bytes: int
    partial_bytes: Mapping[str, int] = field(default_factory=dict)  # file name -> bytes kept


Progress = Callable[[int, int], None]
# (download, progress, stopped) -> the verified file; blocking; raises FetchFailed
Fetch = Callable[[Download, Progress, Callable[[], bool]], Path]


@dataclass(frozen=True)
class AutoDownloadParts:
    """What the job reads of the node, each read afresh when it decides."""

    catalog: Catalog
    wanted: Callable[[], list[MeshModel]]          # the mesh's wanted models, from the plan
    local_files: Callable[[], dict[str, str]]      # file name -> digest, on this disk
    serving: Callable[[], bool]                    # hosts or works for a plan, or wants its own model
    capacity_bytes: Callable[[], int]
    disk: Callable[[], DiskState]                  # blocking (run in a thread)
    fetch: Fetch
    finished: Callable[[Path, str], Awaitable[None]]  # (file, digest): make the inventory take it


class AutoDownload:
    def __init__(self, parts: AutoDownloadParts, disabled: bool = False, retry_s: float = RETRY_SECONDS):
        self.parts = parts
        self.disabled = disabled
        self.retry_s = retry_s
        self.status: DownloadStatus | None = None
        self.refused: dict[str, str] = {}  # digest -> why
        self.failed_at: dict[str, tuple[int, float]] = {}  # digest -> (failures, loop time of the last)
        self.changed = asyncio.Event()
        self.on_change: Callable[[], None] = lambda: None

    def plan_changed(self) -> None:
        self.changed.set()

    async def run(self) -> None:
        if self.disabled:
            return
        while True:
            await self._next_change()
            self.changed.clear()
            try:
                await self.step()
            except Exception:  # one bad look must not end the job
                log.exception("could not decide on a model download")

    async def _next_change(self) -> None:
        blocked = self.status is not None and self.status.state == BLOCKED
        retry = self.retry_s if self.failed_at or blocked else None
        try:
            async with asyncio.timeout(retry):
                await self.changed.wait()
        except TimeoutError:
            pass

    async def step(self) -> None:
        """Decides once, and downloads what the rule picks."""
        parts = self.parts
        disk = await asyncio.to_thread(parts.disk)
        now = asyncio.get_running_loop().time()
        retry_later = {digest: "failed; trying again later" for digest, (count, when) in self.failed_at.items()
                       if now - when < self.retry_delay(count)}
        node = NodeSide(parts.capacity_bytes(), disk.free_bytes, parts.local_files(), parts.serving(),
                        partial_bytes=disk.partial_bytes, refused={**retry_later, **self.refused})
        choice = choose_download(parts.wanted(), node, parts.catalog)
        if choice.download is not None:
            await self.download(choice.download)
            return
        blocked = next(((name, why) for name, why in choice.blocked
                        if not any(name == self._name_of(digest) for digest in retry_later)), None)
        if blocked is not None and not self._shows(blocked[0], BLOCKED, REFUSED):
            name, why = blocked
            self._set(DownloadStatus(name, REFUSED if self._refused_name(name) else BLOCKED, error=why))
            log.warning("not downloading %s: %s", name, why)

    async def download(self, download: Download) -> None:
        model, loop, stop = download.model, asyncio.get_running_loop(), threading.Event()
        log.info("downloading %s (%s) from %s to serve it for the mesh", download.local_file,
                 describe_bytes(model.size), download.repo)
        self._set(DownloadStatus(download.local_file, DOWNLOADING, 0, model.size))
        relay = _Relay(loop, lambda done, total: self._progressed(download, done, total))
        transfer = asyncio.ensure_future(asyncio.to_thread(self.parts.fetch, download, relay, stop.is_set))
        try:
            await self._watch(transfer, model.digest, stop)
            path = await transfer
        except asyncio.CancelledError:
            stop.set()  # the node is stopping: the transfer ends at its next chunk, the partial stays
            transfer.cancel()
            raise
        except FetchFailed as failure:
            if stop.is_set():
                self._set(replace(self.status, state=STOPPED, error=UNWANTED))
                log.info("stopped downloading %s: %s", download.local_file, UNWANTED)
            else:
                self._failed(download, str(failure), failure.refused, loop.time())
            return
        except Exception as error:  # noqa: BLE001 - the status must not stay "downloading"
            log.exception("download of %s failed", download.local_file)
            self._failed(download, f"download of {download.local_file} failed: {error}", False, loop.time())
            return
        self.failed_at.pop(model.digest, None)
        log.info("downloaded %s; its digest is the mesh's; serving it", download.local_file)
        await self.parts.finished(path, model.digest)
        self._set(DownloadStatus(download.local_file, DONE, model.size, model.size))

    async def _watch(self, transfer: asyncio.Future, digest: str, stop: threading.Event) -> None:
        """Until the transfer ends; stops it when a replan leaves the model unwanted (dropped).
        A replan seen here is looked at again once the transfer has ended."""
        try:
            while not transfer.done():
                self.changed.clear()
                waiter = asyncio.ensure_future(self.changed.wait())
                try:
                    await asyncio.wait({transfer, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if self.changed.is_set() and all(model.digest != digest for model in self.parts.wanted()):
                    stop.set()
                    return
        finally:
            self.changed.set()

    def _failed(self, download: Download, message: str, refused: bool, now: float) -> None:
        digest = download.model.digest
        if refused:
            self.refused[digest] = message
        else:
            self.failed_at[digest] = (self.failed_at.get(digest, (0, now))[0] + 1, now)
        done = self.status.done_bytes if self.status is not None else 0
        self._set(DownloadStatus(download.local_file, REFUSED if refused else FAILED, done,
                                 download.model.size, message))
        log.warning("%s", message)

    def retry_delay(self, failures: int) -> float:
        return min(self.retry_s * 2 ** max(0, failures - 1), max(MAX_RETRY_SECONDS, self.retry_s))

    def _progressed(self, download: Download, done: int, total: int) -> None:
        status = self.status
        if status is None or status.model != download.local_file or status.state != DOWNLOADING:
            return
        self._set(replace(status, done_bytes=done, total_bytes=total))
        if total and done * LOG_STEPS // total != status.done_bytes * LOG_STEPS // total and done < total:
            log.info("downloading %s: %d%% (%s of %s)", download.local_file, self.status.percent,
                     describe_bytes(done), describe_bytes(total))

    def _set(self, status: DownloadStatus) -> None:
        self.status = status
        self.on_change()

    def _shows(self, name: str, *states: str) -> bool:
        return self.status is not None and self.status.model == name and self.status.state in states

    def _name_of(self, digest: str) -> str | None:
        return next((model.name for model in self.parts.wanted() if model.digest == digest), None)

    def _refused_name(self, name: str) -> bool:
        return any(self._name_of(digest) == name for digest in self.refused)


class _Relay:
    """Progress from the transfer thread, handed to the loop every 1/STATUS_STEPS of the file."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Progress):
        self.loop, self.deliver, self.last = loop, deliver, -1

    def __call__(self, done: int, total: int) -> None:
        step = done * STATUS_STEPS // total if total else 0
        if step != self.last or done == total:
            self.last = step
            try:
                self.loop.call_soon_threadsafe(self.deliver, done, total)
            except RuntimeError:  # the loop closed: the node is ending
                pass
