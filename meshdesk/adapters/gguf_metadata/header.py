"""Opening a GGUF file and reading its header: the version, the key/value metadata (skipping
what MeshDesk does not need) and the fields it reads from them."""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf.constants import GGUFValueType, Keys

from meshdesk.adapters.gguf_metadata.cursor import (U32, U64, Cursor, ModelFileError, StoredString,
                                                    corrupt_header, one_line, shown)
from meshdesk.adapters.gguf_metadata.kv_cache import kv_bytes_per_token
from meshdesk.adapters.gguf_metadata.tensor_table import TensorInfo, read_tensor_table

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

_SCALAR_LAYOUTS = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: U32,
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: U64,
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_MIN_KV_BYTES = U64.size + U32.size + 1  # key length, value type, smallest value
_ARRAY = object()  # stands for an array value, which is skipped, never stored


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
class _ParsedModel:
    info: ModelFileInfo
    tensors: list[TensorInfo]
    metadata: dict[str, object]  # scalars and undecoded strings; arrays are skipped


def read_model_info(path: str | os.PathLike) -> ModelFileInfo:
    """Validate the GGUF file at `path` and return its metadata; raises ModelFileError."""
    return _parse(Path(path)).info


def read_tensor_infos(path: str | os.PathLike) -> list[TensorInfo]:
    """Validate the GGUF file at `path` and return its tensor table; raises ModelFileError."""
    return _parse(Path(path)).tensors


def read_kv_bytes_per_token(path: str | os.PathLike) -> int | None:
    """The f16 KV cache one token of context needs (`kv_cache`); raises ModelFileError."""
    parsed = _parse(Path(path))
    return kv_bytes_per_token(parsed.metadata, parsed.info.architecture)


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
        raise ModelFileError(f"model path is a directory, not a file: {shown(path)}")
    if not stat.S_ISREG(status.st_mode):
        raise ModelFileError(f"model path is not a regular file: {shown(path)}")
    if status.st_size == 0:
        raise ModelFileError(f"model file is empty: {shown(path)}")


def _mapped(path: Path) -> mmap.mmap:
    try:
        with path.open("rb") as file:
            return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, OverflowError) as error:
        raise _open_error(path, error) from None


def _open_error(path: Path, error: Exception) -> ModelFileError:
    if isinstance(error, FileNotFoundError):
        return ModelFileError(f"model file not found: {shown(path)}")
    if isinstance(error, PermissionError):
        return ModelFileError(f"cannot read model file {shown(path)}: permission denied")
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return ModelFileError(f"cannot read model file {shown(path)}: {one_line(reason)}")


# --- the header -----------------------------------------------------------------------------


def _parse_buffer(buffer: mmap.mmap, path: Path) -> _ParsedModel:
    cursor = Cursor(buffer, path)
    version = _read_preamble(cursor)
    tensor_count = cursor.u64("tensor count")
    kv_count = cursor.u64("key/value count")
    # each count is checked where its items begin, so a cut-off file is reported where it ends
    metadata = _read_metadata(cursor, cursor.check_fits("key/value count", kv_count, _MIN_KV_BYTES))
    tensors, data_offset = read_tensor_table(cursor, tensor_count, _alignment(metadata, path))
    info = _model_info(cursor, metadata, version, tensors, data_offset)
    _check_not_truncated(info)
    return _ParsedModel(info=info, tensors=tensors, metadata=metadata)


def _read_preamble(cursor: Cursor) -> int:
    start = cursor.buffer[: len(GGUF_MAGIC)]
    if start != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF file: {shown(cursor.path)} (starts with {start!r})")
    cursor.position = len(GGUF_MAGIC)
    version = cursor.u32("the GGUF version")
    if version in SUPPORTED_VERSIONS:
        return version
    if int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
        raise ModelFileError(f"unsupported big-endian GGUF file: {shown(cursor.path)}")
    supported = " and ".join(map(str, SUPPORTED_VERSIONS))
    raise ModelFileError(
        f"unsupported GGUF version {version} in {shown(cursor.path)} (supported: {supported})"
    )


def _read_metadata(cursor: Cursor, kv_count: int) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = cursor.text("a key name")
        if key in metadata:
            raise cursor.corrupt(f"duplicate key {key!r}")
        metadata[key] = _read_value(cursor, key, _read_value_type(cursor, key))
    return metadata


def _read_value_type(cursor: Cursor, key: str) -> GGUFValueType:
    code = cursor.u32(f"the value type of {key!r}")
    try:
        return GGUFValueType(code)
    except ValueError:
        raise cursor.corrupt(f"unknown value type {code} for key {key!r}") from None


def _read_value(cursor: Cursor, key: str, value_type: GGUFValueType) -> object:
    if value_type is GGUFValueType.STRING:
        return cursor.string(f"the value of {key!r}")
    if value_type is GGUFValueType.ARRAY:
        _skip_array(cursor, key)
        return _ARRAY
    return cursor.unpack(_SCALAR_LAYOUTS[value_type], f"the value of {key!r}")


def _skip_array(cursor: Cursor, key: str) -> None:
    item_type = _read_value_type(cursor, key)
    if item_type is GGUFValueType.ARRAY:
        # llama.cpp rejects arrays of arrays, so a model containing one cannot be run
        raise cursor.corrupt(f"key {key!r} is an array of arrays, which llama.cpp does not support")
    if item_type is GGUFValueType.STRING:
        _skip_strings(cursor, cursor.count(f"item count of array {key!r}", U64.size), key)
        return
    item_size = _SCALAR_LAYOUTS[item_type].size
    count = cursor.count(f"item count of array {key!r}", item_size)
    cursor.skip(count * item_size, f"array {key!r}")


def _skip_strings(cursor: Cursor, count: int, key: str) -> None:
    what = f"a string in array {key!r}"
    for _ in range(count):
        cursor.string(what)


def _alignment(metadata: dict[str, object], path: Path) -> int:
    alignment = _int_value(metadata, Keys.General.ALIGNMENT, path)
    if alignment is None:
        return DEFAULT_ALIGNMENT
    if alignment == 0 or alignment & (alignment - 1):
        raise corrupt_header(path, f"{Keys.General.ALIGNMENT} is {alignment}, not a power of two")
    return alignment


def _check_not_truncated(info: ModelFileInfo) -> None:
    # without tensors there is no data, and writers differ on padding the header
    needed = info.tensor_data_offset + info.tensor_data_bytes
    if info.tensor_data_bytes and info.size_bytes < needed:
        raise ModelFileError(
            f"model file is truncated: {shown(info.path)} has {info.size_bytes} bytes, its tensors need {needed}"
        )


# --- the fields MeshDesk reads --------------------------------------------------------------

_ARCHITECTURE_NUMBERS = {
    "layer_count": Keys.LLM.BLOCK_COUNT,
    "context_length": Keys.LLM.CONTEXT_LENGTH,
    "expert_count": Keys.LLM.EXPERT_COUNT,
    "embedding_length": Keys.LLM.EMBEDDING_LENGTH,
}


def _model_info(
    cursor: Cursor, metadata: dict[str, object], version: int, tensors: list[TensorInfo], data_offset: int
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
        raise corrupt_header(path, f"key {key!r} should hold a non-negative integer")
    return value


def _str_value(cursor: Cursor, metadata: dict[str, object], key: str) -> str | None:
    value = metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, StoredString):
        raise cursor.corrupt(f"key {key!r} should hold a string")
    return cursor.decode(value, f"the value of {key!r}")
