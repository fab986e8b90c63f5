"""Which tensors of a model a split member's layers hold, and the manifest a host sends it (pure).

A member without the model's file keeps a sparse local copy of its own layers (`node.layer_cache`).
Before the raw RPC stream on an "rpc" link, the host sends the member a manifest of this
member's share: the model's digest and file size and, per tensor, its name, offset and size in
the file and the sha256 of its bytes (`LayerManifest`). The member answers which of those it
holds verified (`held_reply`); the host references only those and lets the others' bytes
through, and the member keeps those it receives.

Which layers a member gets mirrors llama.cpp (`llama_model::load_tensors`, all layers offloaded):
layer `il` of `n_layer` goes to the first device whose cumulative, normalised `tensor_split`
point (float32) exceeds `il / (n_layer + 1)`; the output layer is layer `n_layer`.

Everything a host sends is bounded here: a manifest that names more tensors than `MAX_TENSORS`,
a tensor outside the file or overlapping another, a file larger than the model's advertised
size, or malformed digests is a `LayerManifestError` (the host broke the protocol).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshdesk.core.errors import PeerProtocolError

__all__ = ["MAX_TENSORS", "LayerManifest", "LayerManifestError", "ManifestTensor", "held_reply",
           "layer_devices", "read_held_reply", "share_tensor_names"]

MAX_TENSORS = 8192
MAX_NAME_BYTES = 63  # an rpc_tensor name field is 64 bytes, NUL-terminated
LAYERS_MESSAGE = "layers"
HELD_MESSAGE = "layers_held"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LAYER = re.compile(r"blk\.(\d+)\.")
_OUTPUT_PREFIXES = ("output.", "output_norm.")


class LayerManifestError(PeerProtocolError):
    """A layer manifest (or its answer) that breaks the protocol or its bounds; one line."""


@dataclass(frozen=True)
class ManifestTensor:
    name: str
    file_offset: int
    nbytes: int
    sha256: str  # hex

    @property
    def end(self) -> int:
        return self.file_offset + self.nbytes


@dataclass(frozen=True)
class LayerManifest:
    digest: str  # the model file's sha256, hex
    size: int    # the model file's size in bytes
    tensors: tuple[ManifestTensor, ...]

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    def to_wire(self) -> dict:
        return {"type": LAYERS_MESSAGE, "digest": self.digest, "size": self.size,
                "tensors": [[t.name, t.file_offset, t.nbytes, t.sha256] for t in self.tensors]}

    @classmethod
    def from_wire(cls, message: object, max_size: int) -> LayerManifest:
        """A host's manifest, checked: a file of at most `max_size` bytes (the model's advertised
        size), tensors inside it, not overlapping, with well-formed names and digests."""
        _check(isinstance(message, dict) and message.get("type") == LAYERS_MESSAGE, "not a layers message")
        digest, size, listed = message.get("digest"), message.get("size"), message.get("tensors")
        _check(isinstance(digest, str) and _HEX64.fullmatch(digest) is not None, "a malformed model digest")
        _check(type(size) is int and 0 < size <= max_size, f"a file size of {size!r}, allowed 1..{max_size}")
        _check(isinstance(listed, list) and len(listed) <= MAX_TENSORS, f"tensors must be a list of <= {MAX_TENSORS}")
        tensors = tuple(_tensor(item, size) for item in listed)
        _check(len({tensor.name for tensor in tensors}) == len(tensors), "a tensor named twice")
        ordered = sorted(tensors, key=lambda tensor: tensor.file_offset)
        for before, after in zip(ordered, ordered[1:]):
            _check(before.end <= after.file_offset, f"tensors {before.name} and {after.name} overlap")
        return cls(digest, size, tensors)


def _tensor(item: object, size: int) -> ManifestTensor:
    _check(isinstance(item, list) and len(item) == 4, "each tensor is [name, offset, nbytes, sha256]")
    name, offset, nbytes, digest = item
    _check(isinstance(name, str) and name.isprintable() and 0 < len(name.encode()) <= MAX_NAME_BYTES,
           "a malformed tensor name")
    _check(type(offset) is int and type(nbytes) is int and offset >= 0 and 0 < nbytes <= size - offset,
           f"tensor {name[:64]!r} lies outside the file")
    _check(isinstance(digest, str) and _HEX64.fullmatch(digest) is not None, f"tensor {name[:64]!r} has a bad digest")
    return ManifestTensor(name, offset, nbytes, digest)


def held_reply(manifest: LayerManifest, held: Iterable[str], whole_file: bool = False) -> dict:
    """The member's answer: the indices, in the manifest, of the tensors it holds verified, and
    whether it has the whole file (then any tensor of it may be referenced)."""
    names = set(held)
    return {"type": HELD_MESSAGE, "held": [i for i, t in enumerate(manifest.tensors) if t.name in names],
            "whole_file": whole_file}


def read_held_reply(message: object, manifest: LayerManifest) -> tuple[frozenset[str], bool]:
    """The names of the tensors the member holds, and whether it has the whole file."""
    _check(isinstance(message, dict) and message.get("type") == HELD_MESSAGE, "not a layers_held message")
    held = message.get("held")
    _check(isinstance(held, list) and len(held) <= len(manifest.tensors), "held must be a list of indices")
    _check(all(type(i) is int and 0 <= i < len(manifest.tensors) for i in held), "a held index out of range")
    whole_file = message.get("whole_file", False)
    _check(type(whole_file) is bool, "whole_file must be true or false")
    return frozenset(manifest.tensors[i].name for i in held), whole_file


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise LayerManifestError(problem)


# ---------------------------------------------------------------- which layers a device gets


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def layer_devices(layer_count: int, shares: Iterable[float]) -> list[int]:
    """The device index of each layer 0..layer_count (the last one the output layer), as
    llama.cpp assigns them for this `tensor_split`."""
    points, total = [], 0.0
    for share in shares:
        total = _f32(total + _f32(share))
        points.append(total)
    if not points or total <= 0:
        return [0] * (layer_count + 1)
    points = [_f32(point / total) for point in points]
    devices = []
    for layer in range(layer_count + 1):
        position = _f32(_f32(float(layer)) / _f32(float(layer_count + 1)))
        index = next((i for i, point in enumerate(points) if point > position), len(points))
        devices.append(min(index, len(points) - 1))
    return devices


def share_tensor_names(names: Iterable[str], layer_count: int, shares: Iterable[float], device: int) -> list[str]:
    """The tensors llama.cpp uploads to device `device`: its repeating layers' `blk.N.*`, and
    the output layer's when it is the device of layer `layer_count`."""
    devices = layer_devices(layer_count, list(shares))
    chosen = []
    for name in names:
        match = _LAYER.match(name)
        if match is not None:
            layer = int(match.group(1))
            if layer < layer_count and devices[layer] == device:
                chosen.append(name)
        elif name.startswith(_OUTPUT_PREFIXES) and devices[layer_count] == device:
            chosen.append(name)
    return chosen


def share_manifest(digest: str, size: int, tensors: Mapping[str, tuple[int, int]],
                   digests: Mapping[str, str], names: Iterable[str]) -> LayerManifest:
    """The manifest of `names`: offsets and sizes from `tensors`, digests from `digests`."""
    return LayerManifest(digest, size, tuple(
        ManifestTensor(name, tensors[name][0], tensors[name][1], digests[name]) for name in names))
