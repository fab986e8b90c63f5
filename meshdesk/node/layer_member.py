"""A member's layer caches, the room they may take, and its half of the manifest exchange.

On an "rpc" link from the host its plan elects, before the raw RPC stream, the member reads
the host's manifest of its share (`core.layer_manifest`), bounded by the model's size as the
host's own gossip record advertises it. With the model's file on disk, it holds every tensor
its own GGUF index places where the manifest does. Without it, its layer cache
(`node.layer_cache`) re-verifies what it holds, and the rest is kept as it arrives, if there
is room (`LayerStore.space_bytes`): a share that does not fit is refused, never half-written.

The room for layers, gossiped as `layer_space_bytes`, is the free disk under HOME/layers
minus a reserve, plus what the caches already take (so that filling them does not shrink it
and re-plan the mesh), floored to `SPACE_STEP`; `MESHDESK_LAYER_QUOTA_BYTES` caps it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from meshdesk.core.layer_manifest import LayerManifest, LayerManifestError, held_reply
from meshdesk.core.rpc_stream import WeightTensor
from meshdesk.core.status import LayersStatus
from meshdesk.node.layer_cache import LAYERS_FOLDER, CacheWriter, LayerCache

log = logging.getLogger(__name__)

QUOTA_ENV = "MESHDESK_LAYER_QUOTA_BYTES"
RESERVE_BYTES = 512 << 20  # free disk left to everything else
SPACE_STEP = 64 << 20      # gossiped room is floored to this, so small writes do not re-plan
MANIFEST_SECONDS = 10.0
HASH_BYTES_PER_SECOND = 100 << 20  # a slow disk's pace: waits that cover hashing grow with the bytes


def hashing_seconds(nbytes: int) -> float:
    """How long hashing `nbytes` may take at a slow disk's pace."""
    return nbytes / HASH_BYTES_PER_SECOND


@dataclass
class LayerProgress:
    """What this member is receiving now: X of Y bytes of its share's missing layers."""

    model: str = ""
    received_bytes: int = 0
    missing_bytes: int = 0
    problem: str | None = None  # e.g. no disk space for layers

    def received(self, count: int) -> None:
        self.received_bytes += count

    def start(self, model: str, missing: int) -> None:
        self.model, self.received_bytes, self.missing_bytes = model, 0, missing

    @property
    def receiving(self) -> bool:
        return 0 < self.missing_bytes and self.received_bytes < self.missing_bytes


@dataclass
class LayerStore:
    root: Path
    quota_bytes: int | None = None
    progress: LayerProgress = field(default_factory=LayerProgress)
    _caches: dict[str, LayerCache] = field(default_factory=dict)

    @classmethod
    def in_home(cls, home: Path) -> LayerStore:
        quota = os.environ.get(QUOTA_ENV)
        return cls(home / LAYERS_FOLDER, int(quota) if quota and quota.isdigit() else None)

    def cache(self, digest: str, size: int) -> LayerCache:
        cache = self._caches.get(digest)
        if cache is None or cache.size != size:
            cache = self._caches[digest] = LayerCache(self.root, digest, size)
        return cache

    def used_bytes(self) -> int:
        if not self.root.is_dir():
            return 0
        return sum(path.stat().st_blocks * 512 for path in self.root.glob("*/*") if path.is_file())

    def space_bytes(self) -> int:
        """The room for layer caches, counting what they already take."""
        self.root.mkdir(parents=True, exist_ok=True)
        used = self.used_bytes()
        room = max(0, shutil.disk_usage(self.root).free - RESERVE_BYTES) + used
        if self.quota_bytes is not None:
            room = min(room, self.quota_bytes)
        return room // SPACE_STEP * SPACE_STEP if room >= SPACE_STEP else 0

    def free_bytes(self) -> int:
        """What more the caches may take now."""
        return max(0, self.space_bytes() - self.used_bytes())

    def make_room(self, digest: str, needed: int) -> int:
        """Forgets other models' caches, least recently written first, until `needed` more bytes
        fit (the gossiped room counts what caches hold, so a plan may count on it); a cache a
        tunnel is writing stays. Returns what the caches may take then."""
        free = self.free_bytes()
        for folder in self._other_caches(digest):
            if free >= needed:
                break
            cache = self._caches.get(folder.name)
            if cache is not None and cache.busy:
                continue
            log.info("forgetting the layer cache of model %s to make room for %s", folder.name[:12], digest[:12])
            shutil.rmtree(folder, ignore_errors=True)
            self._caches.pop(folder.name, None)
            free = self.free_bytes()
        return free

    def _other_caches(self, digest: str) -> list[Path]:
        if not self.root.is_dir():
            return []
        folders = [path for path in self.root.iterdir() if path.is_dir() and path.name != digest]
        return sorted(folders, key=lambda path: path.stat().st_mtime)

    def note_space(self, space: int) -> None:
        problem = None if space else (f"no disk space for layers in {self.root} "
                                      f"(free or allowed: under {SPACE_STEP >> 20} MB); serving the API as a lite member")
        if problem and problem != self.progress.problem:
            log.warning("%s", problem)
        self.progress.problem = problem


@dataclass
class Negotiated:
    """What a tunnel's member end uses: files for references, tensors to keep, and where."""

    files: Mapping[str, Mapping[str, WeightTensor]]
    keep: Mapping[str, WeightTensor]
    writer: CacheWriter | None
    read_cache: Callable[[int, int], bytes] | None = None


class NoRoom(Exception):
    """The share does not fit this member's room for layers."""


async def negotiate(link, driven: frozenset[str], model_size: Callable[[str], int | None],
                    own_table: Callable[[str], Mapping[str, WeightTensor] | None], store: LayerStore | None,
                    model_name: Callable[[str], str] = lambda digest: digest[:12]) -> Negotiated:
    """Reads the host's manifest, answers what is held; raises LayerManifestError when the host
    broke the protocol, NoRoom when the share cannot be kept here."""
    largest = max((model_size(digest) or 0 for digest in driven), default=0)
    async with asyncio.timeout(MANIFEST_SECONDS + hashing_seconds(largest)):  # the host may hash our share first
        message = await link.receive()
    digest = message.get("digest") if isinstance(message, dict) else None
    if digest not in driven:
        raise LayerManifestError("a manifest for a model this host does not drive here")
    size = model_size(digest)
    if size is None:
        raise LayerManifestError("a manifest for a model the host does not advertise")
    manifest = LayerManifest.from_wire(message, size)
    table = await asyncio.to_thread(own_table, digest)
    if table is not None:  # the whole file is here
        held = [t.name for t in manifest.tensors
                if (own := table.get(t.name)) and (own.file_offset, own.nbytes) == (t.file_offset, t.nbytes)]
        await link.send(held_reply(manifest, held, whole_file=True))
        return Negotiated({digest: table}, {}, None)
    if store is None:
        raise NoRoom("no local copy of the model and no layer cache here")
    cache = store.cache(digest, manifest.size)
    held = await asyncio.to_thread(cache.verified, manifest)
    missing = frozenset(t.name for t in manifest.tensors) - held
    missing_bytes = sum(t.nbytes for t in manifest.tensors if t.name in missing)
    if missing_bytes:
        free = await asyncio.to_thread(store.make_room, digest, missing_bytes)
        if missing_bytes > free:
            raise NoRoom(f"its layers need {missing_bytes >> 20} MB more, the room left for layers is {free >> 20} MB")
    await asyncio.to_thread(cache.prepare)
    writer = await asyncio.to_thread(cache.writer, manifest, missing, store.progress)
    store.progress.start(model_name(digest), missing_bytes)
    if missing_bytes:
        log.info("receiving layers of %s: %d MB of this member's share", model_name(digest), missing_bytes >> 20)
    try:
        await link.send(held_reply(manifest, held))
    except BaseException:  # the tunnel is refused: release the tensors it would have written
        writer.close()
        raise
    held_table = {t.name: WeightTensor(t.name, t.file_offset, t.nbytes) for t in manifest.tensors if t.name in held}
    return Negotiated({digest: held_table}, writer.table(), writer, cache.read)



def advertised_size(records: Callable[[], list]) -> Callable[[str, str], int | None]:
    """(host id, digest) -> the size of that model file as the host's own record advertises it."""
    def size(host_id: str, digest: str) -> int | None:
        record = next((record for record in records() if record.node_id == host_id), None)
        advert = next((model for model in record.models if model.digest == digest), None) if record else None
        return advert.size if advert is not None else None
    return size


def layer_space(store: LayerStore | None) -> int:
    """What the own record gossips as `layer_space_bytes` (0 on a lite client); notes a lack."""
    if store is None:
        return 0
    try:
        space = store.space_bytes()
    except OSError as error:
        log.warning("cannot measure the room for layers: %s", error)
        space = 0
    store.note_space(space)
    return space


def layers_status(progress: LayerProgress | None) -> LayersStatus:
    if progress is None:
        return LayersStatus()
    return LayersStatus(progress.model, progress.received_bytes, progress.missing_bytes, progress.problem)
