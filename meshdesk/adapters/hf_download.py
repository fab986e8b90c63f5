"""Model downloads from the Hugging Face hub that survive being interrupted or killed.

huggingface-hub builds the URL, reads the file's metadata (size, and the sha256 that the hub
gives LFS files as their linked ETag), supplies auth headers and its configured HTTP client.
The byte transfer is our own loop of HTTP Range requests on that client, because
huggingface-hub 1.18+ deletes a partial file when a download fails: here the bytes go to
`NAME.gguf.partial` next to the target, with `NAME.gguf.partial.source` recording which
remote file they belong to, and a later run carries on from the partial file's size.
Only a complete, verified file is renamed to its final name.

`HF_ENDPOINT` (read by huggingface-hub) or the `endpoint` argument points at another hub.
Every failure is a `DownloadError` whose message is one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from huggingface_hub import get_hf_file_metadata, get_session, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError, GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError,
    RevisionNotFoundError)
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, httpx

CHUNK_BYTES = 1 << 20
RETRIES = 3            # automatic resumes within one run after a dropped connection
READ_TIMEOUT_S = 60.0
SHA256 = re.compile(r"[0-9a-f]{64}")

ProgressCallback = Callable[[int, int], None]   # (bytes downloaded, total bytes)
FileCheck = Callable[[Path], "str | None"]      # a problem with the finished file, or None


class DownloadError(Exception):
    """A download that cannot go on; str(error) is one line for the user."""


class DownloadCancelled(DownloadError):
    """The caller asked the download to stop; its partial file stays for a later resume."""


class DigestMismatch(DownloadError):
    """The hub's file is not the one asked for (another sha256); nothing of it is kept."""


class _Interrupted(Exception):
    """The connection broke mid-way: worth resuming."""


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    filename: str
    url: str
    size: int
    sha256: str | None   # known when the hub gives the LFS etag
    etag: str | None


def find_remote_file(repo: str, filename: str, revision: str = "main", endpoint: str | None = None) -> RemoteFile:
    """Asks the hub about one file (a HEAD request); raises DownloadError."""
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    try:
        metadata = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line below
        raise DownloadError(_metadata_problem(error, repo, filename, url)) from None
    if metadata.size is None:
        raise DownloadError(f"the hub did not say how large {repo}/{filename} is")
    etag = metadata.etag or None
    sha256 = etag if etag and SHA256.fullmatch(etag) else None
    return RemoteFile(repo, filename, url, metadata.size, sha256, etag)


def _metadata_problem(error: Exception, repo: str, filename: str, url: str) -> str:
    hub = _origin(url)
    if isinstance(error, GatedRepoError):
        return f"{repo} is gated: accept its terms at {hub}/{repo} and log in (`hf auth login`) or set HF_TOKEN"
    if isinstance(error, RepositoryNotFoundError):
        return f"no repository {repo} on {hub} (or it is private)"
    if isinstance(error, RevisionNotFoundError):
        return f"no such revision of {repo} on {hub}"
    if isinstance(error, EntryNotFoundError):
        return f"no file {filename} in {repo} on {hub}"
    if isinstance(error, OfflineModeIsEnabled):
        return f"cannot download {repo}: offline mode is on (HF_HUB_OFFLINE)"
    if isinstance(error, HfHubHTTPError):
        return f"the hub at {hub} refused {repo}/{filename}: {_first_line(error)}"
    if isinstance(error, (httpx.HTTPError, OSError)):
        return f"cannot reach the Hugging Face hub at {hub}: {_first_line(error)}"
    return f"cannot ask {hub} about {repo}/{filename}: {_first_line(error)}"


# --- the partial file -----------------------------------------------------------------------


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def _source_path(target: Path) -> Path:
    return target.with_name(target.name + ".partial.source")


def _source_record(remote: RemoteFile) -> dict:
    record = asdict(remote)
    record.pop("url")  # hub mirrors and signed URLs change; the file's identity does not
    return record


def resumable_bytes(remote: RemoteFile, target: Path) -> int:
    """Bytes an earlier, unfinished download of this same remote file left behind."""
    try:
        recorded = json.loads(_source_path(target).read_text())
        size = partial_path(target).stat().st_size
    except (OSError, ValueError):
        return 0
    return size if recorded == _source_record(remote) and size <= remote.size else 0


def _prepare_partial(remote: RemoteFile, target: Path) -> int:
    """The offset to resume from; a partial file of another remote file is started over."""
    start = resumable_bytes(remote, target)
    if start == 0:
        _source_path(target).write_text(json.dumps(_source_record(remote)))
        partial_path(target).write_bytes(b"")
    return start


def discard_partial(target: Path) -> None:
    for path in (partial_path(target), _source_path(target)):
        path.unlink(missing_ok=True)


# --- disk space -----------------------------------------------------------------------------


def check_disk_space(folder: Path, needed_bytes: int) -> None:
    """Raises DownloadError when `folder`'s disk has less than `needed_bytes` free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise DownloadError(f"not enough disk space in {folder}: the download needs {describe_bytes(needed_bytes)}, "
                            f"only {describe_bytes(free)} free")


def describe_bytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


# --- the transfer ---------------------------------------------------------------------------


class _Digest:
    """sha256 of the partial file so far, rebuilt from disk when a run resumes."""

    def __init__(self, partial: Path, upto: int):
        self.restart(partial, upto)

    def restart(self, partial: Path, upto: int) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        with partial.open("rb") as file:
            while self.count < upto:
                self.update(file.read(min(CHUNK_BYTES, upto - self.count)))

    def update(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)


def download(remote: RemoteFile, target: Path, progress: ProgressCallback | None = None,
             check: FileCheck | None = None, retry_wait_s: float = 1.0,
             cancelled: Callable[[], bool] | None = None, expected_sha256: str | None = None) -> Path:
    """Downloads `remote` to `target`, resuming any partial file; raises DownloadError.

    `cancelled` is polled with every chunk (from the thread running this): once it returns
    True the download stops with DownloadCancelled and keeps its partial file.
    `expected_sha256` is the digest the file must have (the one a mesh advertises): a hub
    that says otherwise is refused before any byte moves, and a finished file with another
    digest is deleted; both raise DigestMismatch.
    """
    if expected_sha256 is not None and remote.sha256 is not None and remote.sha256 != expected_sha256:
        raise DigestMismatch(_mismatch(remote, remote.sha256, expected_sha256, "the hub says its sha256 is"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with _only_writer(target):
        return _download(remote, target, progress, check, retry_wait_s, cancelled, expected_sha256)


def _download(remote: RemoteFile, target: Path, progress: ProgressCallback | None, check: FileCheck | None,
              retry_wait_s: float, cancelled: Callable[[], bool] | None, expected_sha256: str | None) -> Path:
    report = _stopping_when(cancelled, progress or (lambda done, total: None), remote)
    try:
        start = _prepare_partial(remote, target)
        digest = _Digest(partial_path(target), start) if remote.sha256 or expected_sha256 else None
        _transfer_with_retries(remote, partial_path(target), report, digest, retry_wait_s)
    except OSError as error:
        raise DownloadError(f"cannot write {partial_path(target)}: {error.strerror or error}") from None
    _verify(remote, target, digest, check)
    if expected_sha256 is not None and digest.hash.hexdigest() != expected_sha256:
        discard_partial(target)
        raise DigestMismatch(_mismatch(remote, digest.hash.hexdigest(), expected_sha256, "its sha256 is") +
                             "; the download was deleted")
    os.replace(partial_path(target), target)
    _source_path(target).unlink(missing_ok=True)
    return target


@contextmanager
def _only_writer(target: Path):
    """One download per target at a time, across processes (`meshdesk download`, the desktop,
    a node downloading for its mesh): an OS lock on `NAME.gguf.partial.lock`, released by the
    OS even when the process is killed."""
    lock = target.with_name(target.name + ".partial.lock")
    with open(lock, "a+b") as handle:
        try:
            _lock(handle)
        except OSError:
            raise DownloadError(f"another download of {target.name} into {target.parent} is under way; "
                                "let it finish") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def _lock(handle) -> None:
    if sys.platform == "win32":
        import msvcrt
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _stopping_when(cancelled: Callable[[], bool] | None, progress: ProgressCallback,
                   remote: RemoteFile) -> ProgressCallback:
    """`progress`, raising DownloadCancelled instead once `cancelled()` says so."""
    if cancelled is None:
        return progress

    def report(done: int, total: int) -> None:
        if cancelled():
            raise DownloadCancelled(f"download of {remote.filename} cancelled at {describe_bytes(done)} of "
                                    f"{describe_bytes(total)}; resuming continues from there")
        progress(done, total)
    return report


def _transfer_with_retries(remote: RemoteFile, partial: Path, progress: ProgressCallback,
                           digest: _Digest | None, retry_wait_s: float) -> None:
    for attempt in range(RETRIES + 1):
        try:
            return _transfer(remote, partial, progress, digest)
        except _Interrupted as why:
            if attempt == RETRIES:
                done = partial.stat().st_size
                raise DownloadError(f"download of {remote.filename} stopped at {describe_bytes(done)} of "
                                    f"{describe_bytes(remote.size)} ({why}); run the command again to resume")
            time.sleep(retry_wait_s * (attempt + 1))


def _transfer(remote: RemoteFile, partial: Path, progress: ProgressCallback, digest: _Digest | None) -> None:
    start = partial.stat().st_size
    progress(start, remote.size)
    if start == remote.size:
        return  # an earlier run got every byte but stopped before renaming
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        with get_session().stream("GET", remote.url, headers=headers, follow_redirects=True,
                                  timeout=READ_TIMEOUT_S) as response:
            offset = _response_offset(response, start, remote)
            _write_body(response, partial, offset, remote.size, progress, digest)
    except httpx.TransportError as error:
        raise _Interrupted(_first_line(error) or type(error).__name__) from None
    if partial.stat().st_size < remote.size:
        raise _Interrupted("the connection closed early")


def _response_offset(response, start: int, remote: RemoteFile) -> int:
    """Where the body's bytes go: `start` for a partial answer, 0 when the server sends it all."""
    if response.status_code == 206 and _content_range_start(response) == start:
        return start
    if response.status_code == 200:
        return 0
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise _Interrupted(f"the hub answered {response.status_code}")
    try:
        response.read()  # the error details are in the body
        hf_raise_for_status(response)
    except HfHubHTTPError as error:
        raise DownloadError(f"the hub refused {remote.repo}/{remote.filename}: {_first_line(error)}") from None
    raise DownloadError(f"unexpected answer {response.status_code} from the hub for {remote.filename}")


def _content_range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _write_body(response, partial: Path, offset: int, total: int, progress: ProgressCallback,
                digest: _Digest | None) -> None:
    if digest is not None and offset != digest.count:
        digest.restart(partial, offset)
    done = offset
    with partial.open("r+b") as file:
        file.seek(offset)
        file.truncate()
        for chunk in response.iter_bytes():  # as the bytes arrive: nothing held back if the link drops
            if done + len(chunk) > total:
                raise DownloadError(f"the hub sent more than the {total} bytes it announced")
            file.write(chunk)
            if digest is not None:
                digest.update(chunk)
            done += len(chunk)
            progress(done, total)


def _mismatch(remote: RemoteFile, found: str, expected: str, saying: str) -> str:
    return (f"{remote.repo}/{remote.filename} is not the mesh's model: {saying} {found[:16]}..., "
            f"the mesh's is {expected[:16]}...; refusing it")


def _verify(remote: RemoteFile, target: Path, digest: _Digest | None, check: FileCheck | None) -> None:
    partial = partial_path(target)
    problem = None
    if partial.stat().st_size != remote.size:
        problem = f"it has {partial.stat().st_size} bytes, not {remote.size}"
    elif digest is not None and remote.sha256 and digest.hash.hexdigest() != remote.sha256:
        problem = f"its sha256 is {digest.hash.hexdigest()}, the hub says {remote.sha256}"
    elif check is not None:
        problem = check(partial)
    if problem:
        discard_partial(target)
        raise DownloadError(f"the download of {remote.filename} is damaged and was deleted: {problem}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
