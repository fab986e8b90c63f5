"""The node's download job (node.auto_download) with the real adapter against a stand-in hub over
real HTTP: failures, a refused file, no disk space, and a node stopping mid-download."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from meshdesk.adapters import hf_download
from meshdesk.app.mesh_download import disk_probe, fetcher
from meshdesk.app.model_choice import bundled_catalog
from meshdesk.core.download_choice import BLOCKED, DONE, FAILED, REFUSED, MeshModel
from meshdesk.node.auto_download import AutoDownload, AutoDownloadParts, DiskState
from tests.hub_stand_in import StandInHub, write_tiny_gguf

REPO, REMOTE = "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"
LOCAL = "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "stand-in.gguf")


@pytest.fixture
def hub():
    hub = StandInHub().start()
    yield hub
    hub.stop()


class Job:
    """An AutoDownload over a models folder, with the mesh wanting `model_bytes` as LOCAL."""

    def __init__(self, hub: StandInHub, folder: Path, model_bytes: bytes, disk=None, retry_s: float = 30.0):
        self.folder = folder
        self.model = MeshModel(LOCAL, len(model_bytes), hashlib.sha256(model_bytes).hexdigest(), 2)
        self.files: dict[str, str] = {}
        self.changes = 0
        self.parts = AutoDownloadParts(
            catalog=bundled_catalog(), wanted=lambda: [self.model], local_files=lambda: self.files,
            serving=lambda: False, capacity_bytes=lambda: 8 * 10**9, disk=disk or disk_probe(folder),
            fetch=fetcher(folder, endpoint=hub.url), finished=self.finished)
        self.job = AutoDownload(self.parts, retry_s=retry_s)
        self.job.on_change = self.changed

    def changed(self) -> None:
        self.changes += 1

    async def finished(self, path: Path, digest: str) -> None:
        self.files[path.name] = digest


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_job_downloads_verifies_and_hands_the_file_over(hub, model_bytes, tmp_path):
    hub.add(REPO, REMOTE, model_bytes)
    job = Job(hub, tmp_path, model_bytes)
    run(job.job.step())
    assert job.files == {LOCAL: job.model.digest}
    assert (tmp_path / LOCAL).read_bytes() == model_bytes
    assert job.job.status.state == DONE and job.changes > 3  # progress reported on the way
    run(job.job.step())  # on disk now: nothing more to fetch
    assert len(hub.gets()) == 1


def test_a_file_with_another_digest_and_no_hub_checksum_is_deleted_never_used(hub, model_bytes, tmp_path):
    hub.add(REPO, REMOTE, model_bytes[:-1] + b"\1", sha256=False)  # the hub cannot tell: only the bytes can
    job = Job(hub, tmp_path, model_bytes)
    run(job.job.step())
    status = job.job.status
    assert status.state == REFUSED and "is not the mesh's model: its sha256 is" in status.error
    assert "the download was deleted" in status.error
    assert job.files == {} and list(tmp_path.iterdir()) == []
    run(job.job.step())  # refused for good: never fetched again
    assert len(hub.gets()) == 1 and job.job.status.state == REFUSED


def test_a_hub_that_fails_is_reported_and_tried_again_later(hub, model_bytes, tmp_path):
    job = Job(hub, tmp_path, model_bytes, retry_s=0.2)
    hub.add(REPO, "another-file.gguf", b"x")  # the repo is there, the file is not

    async def retried():  # one loop throughout, as in a node
        await job.job.step()
        assert job.job.status.state == FAILED and f"no file {REMOTE} in {REPO}" in job.job.status.error
        await job.job.step()  # at once: it waits for the retry time
        assert job.job.status.state == FAILED and job.files == {} and len(hub.seen) == 1
        hub.add(REPO, REMOTE, model_bytes)
        task = asyncio.create_task(job.job.run())
        job.job.plan_changed()
        async with asyncio.timeout(10):
            while job.job.status.state != DONE:
                await asyncio.sleep(0.02)
        task.cancel()
    run(retried())
    assert job.files == {LOCAL: job.model.digest} and job.job.failed_at == {}
    assert [job.job.retry_delay(count) for count in (1, 2, 3)] == [0.2, 0.4, 0.8]  # doubling, capped
    assert AutoDownload(job.parts).retry_delay(10) == 600.0


def test_no_disk_space_is_said_clearly_and_nothing_is_fetched(hub, model_bytes, tmp_path):
    hub.add(REPO, REMOTE, model_bytes)
    job = Job(hub, tmp_path, model_bytes, disk=lambda: DiskState(free_bytes=1_000_000))
    run(job.job.step())
    assert job.job.status.state == BLOCKED
    assert job.job.status.error == f"not enough disk space to download {LOCAL}: it needs 3.1 MB, only 1.0 MB free"
    assert hub.seen == []


def test_a_node_stopping_mid_download_keeps_the_partial_and_the_next_run_resumes(hub, model_bytes, tmp_path):
    hub.add(REPO, REMOTE, model_bytes)
    hub.chunk_delay_s = 0.05
    job = Job(hub, tmp_path, model_bytes)
    partial = hf_download.partial_path(tmp_path / LOCAL)

    async def stopped_half_way():
        task = asyncio.create_task(job.job.run())
        job.job.plan_changed()
        async with asyncio.timeout(20):
            while not (partial.is_file() and partial.stat().st_size > 500_000):
                await asyncio.sleep(0.02)
        task.cancel()  # the node stops
        await asyncio.gather(task, return_exceptions=True)
    run(stopped_half_way())  # asyncio.run waits for the transfer thread: it must stop at its next chunk
    kept = partial.stat().st_size
    assert 500_000 < kept < len(model_bytes) and not (tmp_path / LOCAL).exists() and job.files == {}

    hub.chunk_delay_s = 0.0
    restarted = Job(hub, tmp_path, model_bytes)
    run(restarted.job.step())
    assert hub.gets()[-1].range == f"bytes={kept}-"
    assert (tmp_path / LOCAL).read_bytes() == model_bytes and restarted.files == {LOCAL: restarted.model.digest}


def test_a_model_dropped_mid_download_stops_its_transfer_and_keeps_the_partial(hub, model_bytes, tmp_path):
    from meshdesk.core.download_choice import STOPPED

    hub.add(REPO, REMOTE, model_bytes)
    hub.chunk_delay_s = 0.05
    job = Job(hub, tmp_path, model_bytes)
    partial = hf_download.partial_path(tmp_path / LOCAL)
    wanted = [job.model]
    job.parts = job.job.parts = AutoDownloadParts(**{**job.parts.__dict__, "wanted": lambda: wanted})

    async def dropped_half_way():
        task = asyncio.create_task(job.job.run())
        job.job.plan_changed()
        async with asyncio.timeout(20):
            while not (partial.is_file() and partial.stat().st_size > 500_000):
                await asyncio.sleep(0.02)
            wanted.clear()  # `meshdesk drop` somewhere in the mesh
            job.job.plan_changed()
            while job.job.status.state != STOPPED:
                await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    run(dropped_half_way())
    assert "the mesh no longer wants it" in job.job.status.error and job.files == {}
    assert 500_000 < partial.stat().st_size < len(model_bytes) and not (tmp_path / LOCAL).exists()
