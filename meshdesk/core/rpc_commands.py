"""Which llama.cpp RPC requests a host may send a member's rpc worker, and how large (pure).

llama.cpp's RPC server trusts whoever connects, and has had memory-corruption bugs
(CVE-2024-42477/-42478/-42479, CVE-2026-34159). A member's end of an rpc tunnel therefore
forwards only the requests a host's llama.cpp legitimately sends, each within its bounds,
and drops the tunnel on anything else.

The table is the RPC protocol 7.0.0 of the llama.cpp in llama-cpp-python 0.3.36
(`ggml-rpc.cpp`, `enum rpc_cmd`); every request is `u8 cmd | u64 size | payload`. The fixed
sizes are the client's `sizeof(request)` (read from the library's calls, and seen in a real
split). An rpc_tensor is 296 bytes. Variable-size requests:

- SET_TENSOR: `rpc_tensor | u8 flag | u64 offset | data`; the data at most the largest tensor
  of the models this host drives here (and never less than `SMALL_SET_TENSOR_BYTES`, for
  inputs such as token embeddings of a batch).
- GRAPH_COMPUTE: `u32 device | u32 n_nodes | n_nodes x u64 | u32 n_tensors | n_tensors x
  rpc_tensor`; the counts must add up to the size exactly and stay within their bounds.

Our own REFERENCE (see `core.rpc_stream`) is checked where it is parsed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from meshdesk.core.errors import PeerProtocolError

__all__ = [
    "ALLOWED_FIXED_SIZES", "COMMAND_NAMES", "GRAPH_COMPUTE", "GRAPH_HEAD_BYTES", "MAX_GRAPH_NODES",
    "MAX_GRAPH_TENSORS", "RPC_TENSOR_BYTES", "SET_TENSOR", "SMALL_SET_TENSOR_BYTES", "CommandLimits",
    "RpcStreamError", "check_graph_head", "check_graph_tensor_count", "check_request",
]

RPC_TENSOR_BYTES = 296
SET_TENSOR = 6
GRAPH_COMPUTE = 10
SET_TENSOR_FIXED_BYTES = RPC_TENSOR_BYTES + 1 + 8

COMMAND_NAMES = (
    "ALLOC_BUFFER", "GET_ALIGNMENT", "GET_MAX_SIZE", "BUFFER_GET_BASE", "FREE_BUFFER", "BUFFER_CLEAR",
    "SET_TENSOR", "SET_TENSOR_HASH", "GET_TENSOR", "COPY_TENSOR", "GRAPH_COMPUTE", "GET_DEVICE_MEMORY",
    "INIT_TENSOR", "GET_ALLOC_SIZE", "HELLO", "DEVICE_COUNT", "GRAPH_RECOMPUTE", "MEMSET_TENSOR",
)

# command -> the exact payload size of that request
ALLOWED_FIXED_SIZES = {
    0: 4 + 8,                      # ALLOC_BUFFER: device, size
    1: 4,                          # GET_ALIGNMENT: device
    2: 4,                          # GET_MAX_SIZE: device
    3: 8,                          # BUFFER_GET_BASE: remote_ptr
    4: 8,                          # FREE_BUFFER: remote_ptr
    5: 8 + 1,                      # BUFFER_CLEAR: remote_ptr, value
    7: RPC_TENSOR_BYTES + 8 + 8,   # SET_TENSOR_HASH: tensor, offset, hash
    8: RPC_TENSOR_BYTES + 8 + 8,   # GET_TENSOR: tensor, offset, size
    9: 2 * RPC_TENSOR_BYTES,       # COPY_TENSOR: src, dst
    11: 4,                         # GET_DEVICE_MEMORY: device
    12: RPC_TENSOR_BYTES,          # INIT_TENSOR: tensor
    13: 4 + 11 * RPC_TENSOR_BYTES,  # GET_ALLOC_SIZE: device, tensor, srcs[GGML_MAX_SRC = 10]
    14: 24,                        # HELLO: conn_caps
    15: 0,                         # DEVICE_COUNT
    16: 4,                         # GRAPH_RECOMPUTE: device
    17: RPC_TENSOR_BYTES + 8 + 8 + 1,  # MEMSET_TENSOR: tensor, offset, size, value
}

SMALL_SET_TENSOR_BYTES = 64 << 20
MAX_GRAPH_NODES = 1 << 18
MAX_GRAPH_TENSORS = 1 << 18
GRAPH_HEAD_BYTES = 8  # device, n_nodes
_GRAPH_HEAD = struct.Struct("<II")
_COUNT = struct.Struct("<I")
MAX_GRAPH_BYTES = GRAPH_HEAD_BYTES + 8 * MAX_GRAPH_NODES + 4 + RPC_TENSOR_BYTES * MAX_GRAPH_TENSORS


class RpcStreamError(PeerProtocolError):
    """The stream is not llama.cpp RPC as a host sends it (or a reference is invalid); one line.
    The host (or whatever speaks for it) broke the protocol: its tunnel closes."""


@dataclass(frozen=True)
class CommandLimits:
    """Bounds that depend on the models this host drives here."""

    max_set_tensor_bytes: int = SMALL_SET_TENSOR_BYTES  # data bytes of one SET_TENSOR

    @classmethod
    def for_tensors(cls, largest_tensor_bytes: int) -> CommandLimits:
        return cls(max(SMALL_SET_TENSOR_BYTES, largest_tensor_bytes))


def command_name(command: int) -> str:
    return COMMAND_NAMES[command] if command < len(COMMAND_NAMES) else f"command {command}"


def check_request(command: int, size: int, limits: CommandLimits) -> None:
    """Raises RpcStreamError unless a host may send `command` with a `size`-byte payload."""
    if command in ALLOWED_FIXED_SIZES:
        if size != ALLOWED_FIXED_SIZES[command]:
            raise RpcStreamError(f"{command_name(command)} of {size} bytes, "
                                 f"expected {ALLOWED_FIXED_SIZES[command]}")
    elif command == SET_TENSOR:
        if not SET_TENSOR_FIXED_BYTES <= size <= SET_TENSOR_FIXED_BYTES + limits.max_set_tensor_bytes:
            raise RpcStreamError(f"SET_TENSOR of {size} bytes, allowed {SET_TENSOR_FIXED_BYTES}.."
                                 f"{SET_TENSOR_FIXED_BYTES + limits.max_set_tensor_bytes}")
    elif command == GRAPH_COMPUTE:
        if not GRAPH_HEAD_BYTES + 4 <= size <= MAX_GRAPH_BYTES:
            raise RpcStreamError(f"GRAPH_COMPUTE of {size} bytes, allowed {GRAPH_HEAD_BYTES + 4}..{MAX_GRAPH_BYTES}")
    else:
        raise RpcStreamError(f"{command_name(command)} is not a request a host sends")


def check_graph_head(head: bytes, size: int) -> tuple[int, int]:
    """From GRAPH_COMPUTE's first bytes: (bytes up to and including n_tensors, the n_tensors
    that `size` leaves room for); raises RpcStreamError when they cannot add up."""
    _device, nodes = _GRAPH_HEAD.unpack(head)
    if nodes > MAX_GRAPH_NODES:
        raise RpcStreamError(f"GRAPH_COMPUTE with {nodes} nodes, at most {MAX_GRAPH_NODES}")
    prefix = GRAPH_HEAD_BYTES + 8 * nodes + 4
    tensor_bytes = size - prefix
    if tensor_bytes < 0 or tensor_bytes % RPC_TENSOR_BYTES:
        raise RpcStreamError(f"GRAPH_COMPUTE of {size} bytes cannot hold {nodes} nodes and whole tensors")
    tensors = tensor_bytes // RPC_TENSOR_BYTES
    if tensors > MAX_GRAPH_TENSORS:
        raise RpcStreamError(f"GRAPH_COMPUTE with {tensors} tensors, at most {MAX_GRAPH_TENSORS}")
    return prefix, tensors


def check_graph_tensor_count(field: bytes, expected: int) -> None:
    (declared,) = _COUNT.unpack(field)
    if declared != expected:
        raise RpcStreamError(f"GRAPH_COMPUTE declares {declared} tensors, its size holds {expected}")
