"""A split host's half of the layer exchange: per-tensor digests, the manifest, the referencer.

Per-tensor sha256 digests of a model file are computed once, for the tensors a manifest needs,
and kept in `HOME/tensor-digests/<file digest>.json` (keyed by the file's digest, as the file
digest itself is cached by `node.model_inventory`). At each tunnel connection the host sends
the member the manifest of its share (the layers llama.cpp gives that device for the running
`--tensor-split`, `core.layer_manifest`), reads which tensors it holds, and builds a
`WeightReferencer` that references only those: every other weight of the share travels whole,
as stock RPC sends it, and the member keeps it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from meshdesk.core.layer_manifest import (MAX_TENSORS, LayerManifest, read_held_reply,
                                          share_manifest, share_tensor_names)
from meshdesk.core.rpc_stream import WeightReferencer, WeightTensor
from meshdesk.node.layer_member import hashing_seconds

log = logging.getLogger(__name__)

DIGESTS_FOLDER = "tensor-digests"
HELD_SECONDS = 60.0  # the member may hash its share again before it answers
PIECE = 4 << 20


class TensorDigests:
    """Per-tensor digests of model files, computed on demand and kept on disk by file digest."""

    def __init__(self, home: Path):
        self.folder = home / DIGESTS_FOLDER
        self._known: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def digests(self, path: str, file_digest: str, tensors: Mapping[str, WeightTensor],
                names: list[str]) -> dict[str, str]:
        """Blocking: run in a thread."""
        with self._lock:
            known = self._known.get(file_digest)
            if known is None:
                known = self._known[file_digest] = self._load(file_digest)
            missing = [name for name in names if name not in known]
            if missing:
                with open(path, "rb") as file:
                    for name in missing:
                        known[name] = _hash(file.fileno(), tensors[name])
                self._save(file_digest, known)
            return {name: known[name] for name in names}

    def _load(self, file_digest: str) -> dict[str, str]:
        try:
            stored = json.loads((self.folder / f"{file_digest}.json").read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(stored, dict) else {}

    def _save(self, file_digest: str, known: dict[str, str]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = self.folder / f"{file_digest}.tmp"
            temporary.write_text(json.dumps(known))
            os.replace(temporary, self.folder / f"{file_digest}.json")
        except OSError as error:
            log.warning("cannot keep tensor digests: %s", error)


def _hash(descriptor: int, tensor: WeightTensor) -> str:
    digest = hashlib.sha256()
    for start in range(0, tensor.nbytes, PIECE):
        digest.update(os.pread(descriptor, min(PIECE, tensor.nbytes - start), tensor.file_offset + start))
    return digest.hexdigest()


def member_manifest(model: dict, tensors: Mapping[str, WeightTensor], digests: TensorDigests,
                    devices: tuple[str, ...], shares: tuple[float, ...], member_id: str) -> LayerManifest:
    """Blocking. The manifest of `member_id`'s share of `model` (an inventory entry)."""
    names = share_tensor_names(tensors, int(model["layers"] or 1), shares, devices.index(member_id)) \
        if member_id in devices and len(shares) == len(devices) else []
    names = names[:MAX_TENSORS]
    found = digests.digests(model["path"], model["digest"], tensors, names)
    return share_manifest(model["digest"], int(model["size"]),
                          {name: (tensors[name].file_offset, tensors[name].nbytes) for name in names}, found, names)


async def offer_layers(link, model: dict, tensors: Mapping[str, WeightTensor], digests: TensorDigests,
                       devices: tuple[str, ...], shares: tuple[float, ...], member_id: str,
                       read_file: Callable[[int, int], bytes]) -> WeightReferencer:
    """Sends the member its manifest, reads what it holds: the referencer for this connection.
    A member with the whole file may be sent a reference to any tensor; others, to those they hold."""
    manifest = await asyncio.to_thread(member_manifest, model, tensors, digests, devices, shares, member_id)
    await link.send(manifest.to_wire())
    async with asyncio.timeout(HELD_SECONDS + hashing_seconds(manifest.nbytes)):  # it may hash its share
        reply = await link.receive()
    held, whole_file = read_held_reply(reply, manifest)
    lacking = manifest.nbytes - sum(t.nbytes for t in manifest.tensors if t.name in held)
    if lacking:
        log.info("sending %s %d MB of its layers of %s", member_id[:16], lacking >> 20, model["name"])
    return WeightReferencer(dict(tensors), read_file, model["digest"], referable=None if whole_file else held)


def referencer_factory(weight_table: Callable[[str], Mapping[str, WeightTensor]],
                       file_reader: Callable[[str], Callable[[int, int], bytes]], digests: TensorDigests):
    """What `node.serving` calls at each tunnel connection: the layer exchange, then the referencer."""
    async def make(model: dict, config, member_id: str, link) -> WeightReferencer:
        tensors = await asyncio.to_thread(weight_table, model["path"])
        return await offer_layers(link, model, tensors, digests, tuple(config.devices), tuple(config.shares),
                                  member_id, file_reader(model["path"]))
    return make
