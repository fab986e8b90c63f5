"""The tensor table of a GGUF header: each tensor's name, shape, type, and where its bytes are."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from meshdesk.adapters.gguf_metadata.cursor import U32, U64, Cursor, corrupt_header

GGML_MAX_DIMS = 4
MIN_TENSOR_INFO_BYTES = U64.size + U32.size + U32.size + U64.size  # name, n_dims, type, offset


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute offset in the file
    nbytes: int


@dataclass(frozen=True)
class _TensorEntry:
    """A tensor as the header describes it, before checks against type and alignment."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    relative_offset: int


def read_tensor_table(cursor: Cursor, tensor_count: int, alignment: int) -> tuple[list[TensorInfo], int]:
    cursor.check_fits("tensor count", tensor_count, MIN_TENSOR_INFO_BYTES)
    entries = [_read_tensor_entry(cursor) for _ in range(tensor_count)]
    data_offset = _round_up(cursor.position, alignment)
    return [_tensor_info(entry, data_offset, alignment, cursor.path) for entry in entries], data_offset


def _read_tensor_entry(cursor: Cursor) -> _TensorEntry:
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
        raise corrupt_header(
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
        raise corrupt_header(
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
        raise corrupt_header(path, f"tensor {entry.name!r} has unknown ggml type {entry.ggml_type}")
    return quant_type


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment
