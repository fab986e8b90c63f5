"""Validate a GGUF model file and read the metadata MeshDesk needs, in well under a second.

`gguf.GGUFReader` parses every value (a 262k-token vocabulary field by field) and takes
~17 s on a real model. This parser maps the file and walks the header once, skipping
values it does not need: fixed-size arrays in one step, string arrays by their lengths.
Tensor data is never read, so a 50 GB model costs the same as a small one.

Every problem with the file is reported as `ModelFileError`, whose message is one line.
Tensor shapes are in GGUF (ggml) order: the first dimension is the row length.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, Keys

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
GGML_MAX_DIMS = 4
DEFAULT_ALIGNMENT = 32
# Real keys, tensor names and the few strings we decode are short; bounding them keeps a
# corrupt length from making us copy gigabytes of a mapped file into memory.
MAX_DECODED_STRING_BYTES = 1 << 16

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR_LAYOUTS = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: _U32,
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: _U64,
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_MIN_KV_BYTES = _U64.size + _U32.size + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = _U64.size + _U32.size + _U32.size + _U64.size  # name, n_dims, type, offset
_ARRAY = object()  # stands for an array value, which is skipped, never stored


class ModelFileError(Exception):
    """A model file that cannot be used; str(error) is one clear human line."""


@dataclass(frozen=True)
class ModelFileInfo:
    path: Path
    size_bytes: int
    gguf_version: int
    architecture: str | None
    name: str | None
    layer_count: int | None
    context_length: int | None
    expert_count: int | None
    embedding_length: int | None
    has_chat_template: bool
    tensor_count: int
    tensor_data_offset: int  # absolute file offset where tensor data begins
    tensor_data_bytes: int  # bytes from tensor_data_offset that the tensors need


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute offset in the file
    nbytes: int


@dataclass(frozen=True)
class _StoredString:
    """Where a string value lies in the file; decoded only if MeshDesk needs it."""

    start: int
    length: int


@dataclass(frozen=True)
class _ParsedModel:
    info: ModelFileInfo
    tensors: list[TensorInfo]


def read_model_info(path: str | os.PathLike) -> ModelFileInfo:
    """Validate the GGUF file at `path` and return its metadata; raises ModelFileError."""
    return _parse(Path(path)).info


def read_tensor_infos(path: str | os.PathLike) -> list[TensorInfo]:
    """Validate the GGUF file at `path` and return its tensor table; raises ModelFileError."""
    return _parse(Path(path)).tensors


# --- opening the file -----------------------------------------------------------------------


def _parse(path: Path) -> _ParsedModel:
    _check_regular_file(path)
    with _mapped(path) as buffer:
        return _parse_buffer(buffer, path)


def _check_regular_file(path: Path) -> None:
    try:
        status = path.stat()
    except (OSError, ValueError) as error:
        raise _open_error(path, error) from None
    if stat.S_ISDIR(status.st_mode):
        raise ModelFileError(f"model path is a directory, not a file: {_shown(path)}")
    if not stat.S_ISREG(status.st_mode):
        raise ModelFileError(f"model path is not a regular file: {_shown(path)}")
    if status.st_size == 0:
        raise ModelFileError(f"model file is empty: {_shown(path)}")


def _mapped(path: Path) -> mmap.mmap:
    try:
        with path.open("rb") as file:
            return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, OverflowError) as error:
        raise _open_error(path, error) from None


def _open_error(path: Path, error: Exception) -> ModelFileError:
    if isinstance(error, FileNotFoundError):
        return ModelFileError(f"model file not found: {_shown(path)}")
    if isinstance(error, PermissionError):
        return ModelFileError(f"cannot read model file {_shown(path)}: permission denied")
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return ModelFileError(f"cannot read model file {_shown(path)}: {_one_line(reason)}")


# --- the header -----------------------------------------------------------------------------


def _parse_buffer(buffer: mmap.mmap, path: Path) -> _ParsedModel:
    cursor = _Cursor(buffer, path)
    version = _read_preamble(cursor)
    tensor_count = cursor.u64("tensor count")
    kv_count = cursor.u64("key/value count")
    # each count is checked where its items begin, so a cut-off file is reported where it ends
    metadata = _read_metadata(cursor, cursor.check_fits("key/value count", kv_count, _MIN_KV_BYTES))
    tensors, data_offset = _read_tensor_table(cursor, tensor_count, _alignment(metadata, path))
    info = _model_info(cursor, metadata, version, tensors, data_offset)
    _check_not_truncated(info)
    return _ParsedModel(info=info, tensors=tensors)


def _read_preamble(cursor: _Cursor) -> int:
    start = cursor.buffer[: len(GGUF_MAGIC)]
    if start != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF file: {_shown(cursor.path)} (starts with {start!r})")
    cursor.position = len(GGUF_MAGIC)
    version = cursor.u32("the GGUF version")
    if version in SUPPORTED_VERSIONS:
        return version
    if int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
        raise ModelFileError(f"unsupported big-endian GGUF file: {_shown(cursor.path)}")
    supported = " and ".join(map(str, SUPPORTED_VERSIONS))
    raise ModelFileError(
        f"unsupported GGUF version {version} in {_shown(cursor.path)} (supported: {supported})"
    )


def _read_metadata(cursor: _Cursor, kv_count: int) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = cursor.text("a key name")
        if key in metadata:
            raise cursor.corrupt(f"duplicate key {key!r}")
        metadata[key] = _read_value(cursor, key, _read_value_type(cursor, key))
    return metadata


def _read_value_type(cursor: _Cursor, key: str) -> GGUFValueType:
    code = cursor.u32(f"the value type of {key!r}")
    try:
        return GGUFValueType(code)
    except ValueError:
        raise cursor.corrupt(f"unknown value type {code} for key {key!r}") from None


def _read_value(cursor: _Cursor, key: str, value_type: GGUFValueType) -> object:
    if value_type is GGUFValueType.STRING:
        return cursor.string(f"the value of {key!r}")
    if value_type is GGUFValueType.ARRAY:
        _skip_array(cursor, key)
        return _ARRAY
    return cursor.unpack(_SCALAR_LAYOUTS[value_type], f"the value of {key!r}")


def _skip_array(cursor: _Cursor, key: str) -> None:
    item_type = _read_value_type(cursor, key)
    if item_type is GGUFValueType.ARRAY:
        # llama.cpp rejects arrays of arrays, so a model containing one cannot be run
        raise cursor.corrupt(f"key {key!r} is an array of arrays, which llama.cpp does not support")
    if item_type is GGUFValueType.STRING:
        _skip_strings(cursor, cursor.count(f"item count of array {key!r}", _U64.size), key)
        return
    item_size = _SCALAR_LAYOUTS[item_type].size
    count = cursor.count(f"item count of array {key!r}", item_size)
    cursor.skip(count * item_size, f"array {key!r}")


def _skip_strings(cursor: _Cursor, count: int, key: str) -> None:
    what = f"a string in array {key!r}"
    for _ in range(count):
        cursor.string(what)


def _alignment(metadata: dict[str, object], path: Path) -> int:
    alignment = _int_value(metadata, Keys.General.ALIGNMENT, path)
    if alignment is None:
        return DEFAULT_ALIGNMENT
    if alignment == 0 or alignment & (alignment - 1):
        raise _corrupt(path, f"{Keys.General.ALIGNMENT} is {alignment}, not a power of two")
    return alignment


# --- the tensor table -----------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorEntry:
    """A tensor as the header describes it, before checks against type and alignment."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    relative_offset: int


def _read_tensor_table(cursor: _Cursor, tensor_count: int, alignment: int) -> tuple[list[TensorInfo], int]:
    cursor.check_fits("tensor count", tensor_count, _MIN_TENSOR_INFO_BYTES)
    entries = [_read_tensor_entry(cursor) for _ in range(tensor_count)]
    data_offset = _round_up(cursor.position, alignment)
    return [_tensor_info(entry, data_offset, alignment, cursor.path) for entry in entries], data_offset


def _read_tensor_entry(cursor: _Cursor) -> _TensorEntry:
    name = cursor.text("a tensor name")
    n_dims = cursor.u32(f"the dimension count of tensor {name!r}")
    if n_dims > GGML_MAX_DIMS:
        raise cursor.corrupt(f"tensor {name!r} has {n_dims} dimensions, more than {GGML_MAX_DIMS}")
    shape = tuple(cursor.u64(f"the shape of tensor {name!r}") for _ in range(n_dims))
    ggml_type = cursor.u32(f"the type of tensor {name!r}")
    relative_offset = cursor.u64(f"the offset of tensor {name!r}")
    return _TensorEntry(name, shape, ggml_type, relative_offset)


def _tensor_info(entry: _TensorEntry, data_offset: int, alignment: int, path: Path) -> TensorInfo:
    if entry.relative_offset % alignment:
        raise _corrupt(
            path, f"tensor {entry.name!r} offset {entry.relative_offset} is not a multiple of the alignment {alignment}"
        )
    nbytes = _tensor_nbytes(entry, path)
    return TensorInfo(entry.name, entry.shape, entry.ggml_type, data_offset + entry.relative_offset, nbytes)


def _tensor_nbytes(entry: _TensorEntry, path: Path) -> int:
    quant_type = _quantization_type(entry, path)
    block_size, type_size = GGML_QUANT_SIZES[quant_type]
    row_length = entry.shape[0] if entry.shape else 1
    # ggml stores whole blocks per row, which also makes the element count a multiple
    if row_length % block_size:
        raise _corrupt(
            path,
            f"tensor {entry.name!r} row length {row_length} is not a multiple of "
            f"the {quant_type.name} block size {block_size}",
        )
    return math.prod(entry.shape) // block_size * type_size


def _quantization_type(entry: _TensorEntry, path: Path) -> GGMLQuantizationType:
    try:
        quant_type = GGMLQuantizationType(entry.ggml_type)
    except ValueError:
        quant_type = None
    if quant_type not in GGML_QUANT_SIZES:
        raise _corrupt(path, f"tensor {entry.name!r} has unknown ggml type {entry.ggml_type}")
    return quant_type


def _check_not_truncated(info: ModelFileInfo) -> None:
    # without tensors there is no data, and writers differ on padding the header
    needed = info.tensor_data_offset + info.tensor_data_bytes
    if info.tensor_data_bytes and info.size_bytes < needed:
        raise ModelFileError(
            f"model file is truncated: {_shown(info.path)} has {info.size_bytes} bytes, its tensors need {needed}"
        )


# --- the fields MeshDesk reads --------------------------------------------------------------

_ARCHITECTURE_NUMBERS = {
    "layer_count": Keys.LLM.BLOCK_COUNT,
    "context_length": Keys.LLM.CONTEXT_LENGTH,
    "expert_count": Keys.LLM.EXPERT_COUNT,
    "embedding_length": Keys.LLM.EMBEDDING_LENGTH,
}


def _model_info(
    cursor: _Cursor, metadata: dict[str, object], version: int, tensors: list[TensorInfo], data_offset: int
) -> ModelFileInfo:
    architecture = _str_value(cursor, metadata, Keys.General.ARCHITECTURE)
    return ModelFileInfo(
        path=cursor.path,
        size_bytes=cursor.size,
        gguf_version=version,
        architecture=architecture,
        name=_str_value(cursor, metadata, Keys.General.NAME),
        **_architecture_numbers(metadata, architecture, cursor.path),
        has_chat_template=Keys.Tokenizer.CHAT_TEMPLATE in metadata,
        tensor_count=len(tensors),
        tensor_data_offset=data_offset,
        tensor_data_bytes=max((t.offset - data_offset + t.nbytes for t in tensors), default=0),
    )


def _architecture_numbers(
    metadata: dict[str, object], architecture: str | None, path: Path
) -> dict[str, int | None]:
    if architecture is None:
        return dict.fromkeys(_ARCHITECTURE_NUMBERS)
    return {
        field: _int_value(metadata, key.format(arch=architecture), path)
        for field, key in _ARCHITECTURE_NUMBERS.items()
    }


def _int_value(metadata: dict[str, object], key: str, path: Path) -> int | None:
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _corrupt(path, f"key {key!r} should hold a non-negative integer")
    return value


def _str_value(cursor: _Cursor, metadata: dict[str, object], key: str) -> str | None:
    value = metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, _StoredString):
        raise cursor.corrupt(f"key {key!r} should hold a string")
    return cursor.decode(value, f"the value of {key!r}")


# --- reading primitives ---------------------------------------------------------------------


class _Cursor:
    """Reads little-endian GGUF fields from a mapped file, never past its end."""

    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self.size = len(buffer)
        self.position = 0

    def unpack(self, layout: struct.Struct, what: str):
        if self.position + layout.size > self.size:
            raise ModelFileError(
                f"model file is truncated: {_shown(self.path)} ends at byte {self.size}, "
                f"inside the GGUF header, while reading {_one_line(what)}"
            )
        value = layout.unpack_from(self.buffer, self.position)[0]
        self.position += layout.size
        return value

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(_U64, what)

    def skip(self, length: int, what: str) -> None:
        if self.position + length > self.size:
            raise self.overrun(
                f"{what} (length {length} at byte {self.position}) runs past the end of the file ({self.size} bytes)"
            )
        self.position += length

    def count(self, what: str, min_item_bytes: int) -> int:
        return self.check_fits(what, self.u64(what), min_item_bytes)

    def check_fits(self, what: str, count: int, min_item_bytes: int) -> int:
        if count * min_item_bytes > self.size - self.position:
            left = self.size - self.position
            raise self.overrun(f"{what} {count} cannot fit in the {left} bytes left in the file")
        return count

    def string(self, what: str) -> _StoredString:
        length = self.u64(f"the length of {what}")
        start = self.position
        self.skip(length, what)
        return _StoredString(start, length)

    def text(self, what: str) -> str:
        return self.decode(self.string(what), what)

    def decode(self, stored: _StoredString, what: str) -> str:
        if stored.length > MAX_DECODED_STRING_BYTES:
            raise self.corrupt(
                f"{what} at byte {stored.start} is {stored.length} bytes long, more than {MAX_DECODED_STRING_BYTES}"
            )
        try:
            return self.buffer[stored.start : stored.start + stored.length].decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt(f"{what} at byte {stored.start} is not valid UTF-8") from None

    def corrupt(self, problem: str) -> ModelFileError:
        return _corrupt(self.path, problem)

    def overrun(self, problem: str) -> ModelFileError:
        # a cut-off download and a garbage length look the same from here
        path = _shown(self.path)
        return ModelFileError(f"corrupt or truncated GGUF header in {path}: {_one_line(problem)}")


def _corrupt(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(f"corrupt GGUF header in {_shown(path)}: {_one_line(problem)}")


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _shown(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def _one_line(text: str) -> str:
    return text if text.isprintable() else repr(text)[1:-1]
