"""A split member's own layers of a model it has no file of: a sparse copy, keyed by digest.

`HOME/layers/<model digest>/model.layers` is a sparse file of the model's size; a tensor's bytes
lie at their offset in the real file. `held.json` lists the tensors written and verified (name
-> [offset, nbytes, sha256]). Files with the same name and another digest never meet: the
folder is the digest.

Nothing listed is trusted: before a tunnel uses the cache (`verified`), each listed tensor the
host's manifest names is hashed again and compared with the manifest's digest; a torn or
tampered one is dropped from the list (and so fetched again). The result is remembered while
the file's size, mtime and inode stay the same, so the several connections of one load do not
hash the share again.

All methods block (file IO, hashing): call them in a thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from meshdesk.core.layer_manifest import LayerManifest, ManifestTensor
from meshdesk.core.rpc_expander import KeptPiece
from meshdesk.core.rpc_stream import WeightTensor

log = logging.getLogger(__name__)

LAYERS_FOLDER = "layers"
DATA_FILE = "model.layers"
HELD_FILE = "held.json"
HASH_PIECE = 4 << 20


class LayerCache:
    """One model's cache folder."""

    def __init__(self, root: Path, digest: str, size: int):
        self.folder = root / digest
        self.path = self.folder / DATA_FILE
        self.digest = digest
        self.size = size
        self._lock = threading.Lock()
        self._verified: tuple[tuple, frozenset[str]] | None = None  # (file signature, names)
        self._writing: set[str] = set()  # tensors a tunnel keeps now: no second one writes them

    @property
    def busy(self) -> bool:
        """A tunnel is writing into this cache now."""
        with self._lock:
            return bool(self._writing)

    # --- what is held ----------------------------------------------------------------------

    def _held(self) -> dict[str, list]:
        try:
            stored = json.loads((self.folder / HELD_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def _save_held(self, held: dict[str, list]) -> None:
        temporary = self.folder / (HELD_FILE + ".tmp")
        temporary.write_text(json.dumps(held))
        os.replace(temporary, self.folder / HELD_FILE)

    def _signature(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_size, stat.st_mtime_ns, stat.st_ino)

    def verified(self, manifest: LayerManifest) -> frozenset[str]:
        """The manifest's tensors this cache holds, each hashed again (or unchanged since it was)."""
        with self._lock:
            signature = self._signature()
            if signature is None or signature[0] != self.size:
                return frozenset()
            held = self._held()
            listed = [t for t in manifest.tensors if held.get(t.name) == [t.file_offset, t.nbytes, t.sha256]]
            unchanged = self._verified is not None and self._verified[0] == signature
            checked = self._verified[1] if unchanged else frozenset()
            unchecked = [t for t in listed if t.name not in checked]  # only these are hashed again
            good = {t.name for t in listed if t.name in checked}
            good |= {t.name for t in unchecked if self._hash(t) == t.sha256}
            bad = [t.name for t in unchecked if t.name not in good]
            if bad:
                log.warning("layer cache %s: %d tensors no longer match their digest (%s...); fetching them again",
                            self.digest[:12], len(bad), bad[0])
                self._save_held({name: entry for name, entry in held.items() if name not in bad})
            self._verified = (signature, checked | frozenset(good))
            return frozenset(good)

    def _hash(self, tensor: ManifestTensor) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as file:
            for start in range(0, tensor.nbytes, HASH_PIECE):
                length = min(HASH_PIECE, tensor.nbytes - start)
                data = os.pread(file.fileno(), length, tensor.file_offset + start)
                if len(data) != length:
                    return ""
                digest.update(data)
        return digest.hexdigest()

    def allocated_bytes(self) -> int:
        try:
            return self.path.stat().st_blocks * 512
        except OSError:
            return 0

    # --- reading and writing ---------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as file:
            return os.pread(file.fileno(), length, offset)

    def prepare(self) -> None:
        """The folder and a sparse file of the model's size (nothing is allocated)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as file:
            if file.tell() != self.size:
                file.truncate(self.size)

    def writer(self, manifest: LayerManifest, missing: frozenset[str], progress) -> CacheWriter:
        """A writer for the missing tensors no other tunnel is writing now."""
        with self._lock:
            mine = {t.name: t for t in manifest.tensors if t.name in missing and t.name not in self._writing}
            self._writing |= set(mine)
        return CacheWriter(self, mine, progress)

    def release(self, names) -> None:
        with self._lock:
            self._writing -= set(names)

    def record(self, tensor: ManifestTensor) -> None:
        with self._lock:
            held = self._held()
            held[tensor.name] = [tensor.file_offset, tensor.nbytes, tensor.sha256]
            self._save_held(held)
            if self._verified is not None:  # our own write: what was verified stays so
                self._verified = (self._signature(), self._verified[1] | {tensor.name})


class CacheWriter:
    """Takes the `KeptPiece`s of one tunnel: writes each at its tensor's place, hashes it, and
    records a tensor held once all its bytes are in and their digest is the manifest's. When the
    disk fails (full), it stops keeping and says so; the bytes still reach the worker."""

    def __init__(self, cache: LayerCache, missing: dict[str, ManifestTensor], progress):
        self.cache = cache
        self.missing = missing  # only these are ever written: the expander keeps nothing else
        self.progress = progress  # LayerProgress: received bytes, shown in the status
        self._hashes: dict[str, hashlib._Hash] = {}
        self._kept: set[str] = set()  # recorded in this tunnel
        self._file = open(cache.path, "r+b")
        self.failure: OSError | None = None

    def table(self) -> dict[str, WeightTensor]:
        return {name: WeightTensor(name, t.file_offset, t.nbytes) for name, t in self.missing.items()}

    def keep(self, piece: KeptPiece) -> None:
        tensor = self.missing.get(piece.tensor)
        if tensor is None or piece.start + len(piece.data) > tensor.nbytes:
            raise ValueError(f"a kept piece outside {piece.tensor!r}")  # the expander's bug, not the host's
        if piece.start == 0 and tensor.name not in self._kept:  # a second upload leaves the kept bytes be
            self._hashes[tensor.name] = hashlib.sha256()
        running = self._hashes.get(tensor.name)
        self.progress.received(len(piece.data))
        if running is None or self.failure is not None:
            return
        try:
            write_all(self._file.fileno(), piece.data, tensor.file_offset + piece.start)
            running.update(piece.data)
            if piece.last:
                del self._hashes[tensor.name]
                self._finish(tensor, running.hexdigest())
        except OSError as error:
            self.failure = error
            log.warning("cannot keep layers of %s: %s; they will be sent again next time", self.cache.digest[:12], error)

    def _finish(self, tensor: ManifestTensor, digest: str) -> None:
        if digest != tensor.sha256:
            log.warning("layer %s from the host does not match its digest; not kept", tensor.name)
            return
        os.fsync(self._file.fileno())
        self.cache.record(tensor)
        self._kept.add(tensor.name)

    def close(self) -> None:
        self._file.close()
        self.cache.release(self.missing)


def write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite until every byte is written: a short write (a disk filling up) is an OSError."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, "the disk took no more bytes")
        view, offset = view[written:], offset + written
