"""`meshdesk download` and its adapter, against a stand-in Hugging Face hub over real HTTP."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshdesk.adapters import hf_download
from meshdesk.adapters.hf_download import DownloadError, check_disk_space, download, find_remote_file
from meshdesk.app.model_choice import choose_model
from tests.hub_stand_in import StandInHub, write_tiny_gguf
from tests.nodes import meshdesk_command, poll, run_meshdesk
from tests.nodes import test_environment as child_environment

SMALL_REPO, SMALL_FILE = "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"
MID_REPO, MID_FILE = "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf"
SMALL_LOCAL = "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    """A real GGUF of about 3 MB."""
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "stand-in.gguf")


@pytest.fixture
def hub(model_bytes):
    hub = StandInHub().start()
    hub.add(SMALL_REPO, SMALL_FILE, model_bytes)
    hub.add(MID_REPO, MID_FILE, model_bytes[:-1000] + model_bytes[-1000:][::-1])  # other tensor bytes
    yield hub
    hub.stop()


def cli_environment(hub_url: str, user_home: Path) -> dict:
    return {"HF_ENDPOINT": hub_url, "HOME": str(user_home), "HF_HOME": str(user_home / "hf"),
            "HF_TOKEN": None, "HF_HUB_OFFLINE": None}


def run_download(hub_url: str, tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    return run_meshdesk("download", "--home", str(tmp_path / "home"), *arguments,
                        environment=cli_environment(hub_url, tmp_path))


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    described = f"exit={result.returncode} stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == 2 and "Traceback" not in result.stderr, described
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshdesk download: error: "), described
    return lines[0]


def ggufs_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.gguf")) if folder.is_dir() else []


# --- the adapter ----------------------------------------------------------------------------


def test_metadata_comes_from_the_hub_headers(hub, model_bytes):
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    assert remote.size == len(model_bytes)
    assert remote.sha256 == hashlib.sha256(model_bytes).hexdigest()
    assert remote.url == f"{hub.url}/{SMALL_REPO}/resolve/main/{SMALL_FILE}"


def test_progress_events_rise_to_the_total(hub, model_bytes, tmp_path):
    events = []
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    target = download(remote, tmp_path / SMALL_LOCAL, progress=lambda done, total: events.append((done, total)))
    assert target.read_bytes() == model_bytes
    assert len(events) > 3 and events[0] == (0, len(model_bytes)) and events[-1] == (len(model_bytes),) * 2
    assert all(total == len(model_bytes) for _, total in events)
    assert all(before[0] <= after[0] for before, after in zip(events, events[1:]))
    assert sorted(path.name for path in tmp_path.iterdir()) == [SMALL_LOCAL]  # no partial left over


def test_a_dropped_connection_resumes_from_the_partial_size(hub, model_bytes, tmp_path):
    hub.drop_after = 1_000_003
    events = []
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    target = download(remote, tmp_path / SMALL_LOCAL, progress=lambda done, total: events.append(done),
                      retry_wait_s=0.01)
    assert [seen.range for seen in hub.gets()] == [None, "bytes=1000003-"]
    assert target.read_bytes() == model_bytes
    assert 1_000_003 in events and events == sorted(events)


def test_a_connection_that_keeps_dropping_leaves_a_partial_to_resume_later(hub, model_bytes, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(hf_download, "RETRIES", 0)
    hub.drop_after = 500_000
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download(remote, tmp_path / SMALL_LOCAL)
    assert not (tmp_path / SMALL_LOCAL).exists()
    assert hf_download.resumable_bytes(remote, tmp_path / SMALL_LOCAL) == 500_000
    assert download(remote, tmp_path / SMALL_LOCAL).read_bytes() == model_bytes
    assert hub.gets()[-1].range == "bytes=500000-"


def test_a_partial_file_of_another_remote_file_starts_over(hub, model_bytes, tmp_path):
    target = tmp_path / SMALL_LOCAL
    hf_download.partial_path(target).write_bytes(b"left by something else")
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    assert hf_download.resumable_bytes(remote, target) == 0
    assert download(remote, target).read_bytes() == model_bytes
    assert [seen.range for seen in hub.gets()] == [None]


def test_a_checksum_mismatch_deletes_the_download(hub, model_bytes, tmp_path):
    hub.add(SMALL_REPO, SMALL_FILE, model_bytes, claimed_sha256="0" * 64)
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    with pytest.raises(DownloadError, match="damaged and was deleted: its sha256 is"):
        download(remote, tmp_path / SMALL_LOCAL)
    assert list(tmp_path.iterdir()) == []


def test_without_a_checksum_the_file_check_decides(hub, tmp_path):
    hub.add(SMALL_REPO, SMALL_FILE, b"not a model at all", sha256=False)
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    assert remote.sha256 is None
    with pytest.raises(DownloadError, match="damaged and was deleted: not GGUF"):
        download(remote, tmp_path / SMALL_LOCAL, check=lambda path: "not GGUF")
    assert list(tmp_path.iterdir()) == []


def test_not_enough_disk_space_is_refused_before_any_byte_moves(hub, tmp_path, monkeypatch):
    usage = hf_download.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(hf_download.shutil, "disk_usage", lambda path: usage._replace(free=1_000_000))
    with pytest.raises(DownloadError) as caught:
        check_disk_space(tmp_path / "models", 3_000_000)
    assert str(caught.value) == (f"not enough disk space in {tmp_path / 'models'}: "
                                 "the download needs 3.0 MB, only 1.0 MB free")
    check_disk_space(tmp_path / "models", 1_000_000)


# --- meshdesk download ----------------------------------------------------------------------


def test_download_with_its_draft_then_serve_it_by_name(hub, model_bytes, tmp_path, monkeypatch):
    result = run_download(hub.url, tmp_path, "1.5b", "--draft")
    assert result.returncode == 0, result.stderr
    models = tmp_path / "home" / "models"
    assert ggufs_in(models) == ["Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Qwen2.5-1.5B-Instruct-Q4_K_M.gguf"]
    assert (models / SMALL_LOCAL).read_bytes() == model_bytes
    assert "100%" in result.stderr and f"Saved {models / SMALL_LOCAL}" in result.stdout
    assert list(models.glob("*.partial*")) == []

    again = run_download(hub.url, tmp_path, "qwen2.5-1.5b")
    assert again.returncode == 0 and "already downloaded" in again.stdout
    assert len(hub.gets()) == 2

    monkeypatch.setenv("HOME", str(tmp_path))
    assert choose_model("1.5b", models).path == models / "Qwen2.5-1.5B-Instruct-Q4_K_M.gguf"


def test_a_killed_download_resumes_where_it_stopped(hub, model_bytes, tmp_path):
    hub.chunk_delay_s = 0.05  # about 1.3 MB/s: slow enough to kill it half-way
    partial = tmp_path / "home" / "models" / (SMALL_LOCAL + ".partial")
    process = subprocess.Popen(meshdesk_command("download", "--home", str(tmp_path / "home"), "0.5b"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=child_environment(cli_environment(hub.url, tmp_path)))
    try:
        poll(lambda: partial.is_file() and partial.stat().st_size > 300_000, 30,
             message="the download to be under way")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    kept = partial.stat().st_size
    assert 300_000 < kept < len(model_bytes)
    assert not (tmp_path / "home" / "models" / SMALL_LOCAL).exists()

    hub.chunk_delay_s = 0.0
    result = run_download(hub.url, tmp_path, "0.5b")
    assert result.returncode == 0, result.stderr
    assert "resuming at" in result.stdout
    assert hub.gets()[-1].range == f"bytes={kept}-"
    assert (tmp_path / "home" / "models" / SMALL_LOCAL).read_bytes() == model_bytes


def test_an_unknown_repo_is_one_line_and_writes_nothing(hub, tmp_path):
    line = assert_one_line_error(run_download(hub.url, tmp_path, "7b"))
    assert line == f"meshdesk download: error: no repository bartowski/Qwen2.5-7B-Instruct-GGUF on {hub.url} " \
                   "(or it is private)"
    assert ggufs_in(tmp_path / "home" / "models") == [] and hub.gets() == []


def test_a_hub_that_is_down_is_one_line(tmp_path):
    import socket
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    line = assert_one_line_error(run_download(url, tmp_path, "0.5b"))
    assert line.startswith(f"meshdesk download: error: cannot reach the Hugging Face hub at {url}: ")
    assert ggufs_in(tmp_path / "home" / "models") == []


def test_an_unknown_name_or_quantization_is_one_line(hub, tmp_path):
    assert "unknown model 'gpt-9'" in assert_one_line_error(run_download(hub.url, tmp_path, "gpt-9"))
    assert "Qwen2.5-0.5B-Instruct has no quantization Q3_K_S (offered: Q4_K_M, Q8_0)" in \
        assert_one_line_error(run_download(hub.url, tmp_path, "0.5b", "--quant", "Q3_K_S"))


def test_not_enough_disk_space_stops_the_command_before_downloading(hub, tmp_path):
    """The real command, with only the disk's free space shrunk to 1 MB."""
    program = ("import shutil, sys\n"
               "real = shutil.disk_usage\n"
               "shutil.disk_usage = lambda path: real(path)._replace(free=1_000_000)\n"
               "from meshdesk.app.cli import main\n"
               "raise SystemExit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", program, "download", "--home", str(tmp_path / "home"), "0.5b"],
                            capture_output=True, text=True, timeout=60,
                            env=child_environment(cli_environment(hub.url, tmp_path)))
    line = assert_one_line_error(result)
    assert "not enough disk space" in line and "needs 3.1 MB, only 1.0 MB free" in line
    assert hub.gets() == [] and list((tmp_path / "home" / "models").iterdir()) == []


def test_download_without_a_name_lists_the_catalog(tmp_path):
    result = run_meshdesk("download", "--home", str(tmp_path / "home"), environment={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["NAME", "ALIASES", "SIZE"]
    seventy = next(line for line in result.stdout.splitlines() if line.startswith("Llama-3.3-70B-Instruct"))
    assert "70b" in seventy and "Llama-3.2-1B-Instruct" in seventy


def test_one_writer_per_file_another_download_of_it_is_refused_until_the_first_ends(hub, model_bytes, tmp_path):
    import threading

    hub.chunk_delay_s = 0.02
    remote = find_remote_file(SMALL_REPO, SMALL_FILE, endpoint=hub.url)
    under_way, finished = threading.Event(), []
    first = threading.Thread(target=lambda: finished.append(download(
        remote, tmp_path / SMALL_LOCAL, progress=lambda done, total: done > 100_000 and under_way.set())))
    first.start()
    assert under_way.wait(20)
    with pytest.raises(DownloadError, match=f"another download of {SMALL_LOCAL} into .* is under way"):
        download(remote, tmp_path / SMALL_LOCAL)
    first.join(30)
    assert finished and (tmp_path / SMALL_LOCAL).read_bytes() == model_bytes
    assert sorted(path.name for path in tmp_path.iterdir()) == [SMALL_LOCAL]
