"""Zero-transfer weight loading on the llama.cpp RPC stream (client -> server direction), sans-IO.

Every RPC request is `u8 cmd | u64 size | payload[size]`, little-endian. A SET_TENSOR payload
is a 296-byte rpc_tensor descriptor (NUL-padded name at bytes 228..292), a u8 cache flag, a
u64 offset into the tensor, then the raw bytes; for model weights those bytes are exactly the
tensor's bytes in the GGUF file.

The host end of a tunnel (`WeightReferencer`) replaces a SET_TENSOR whose bytes equal the
file's by a REFERENCE message, our own command that only ever travels between the two tunnel
ends; the member end (`core.rpc_expander.ReferenceExpander`) rebuilds the identical SET_TENSOR
from its own copy of the same file. Everything else passes through unchanged, as it arrives.

REFERENCE layout: `u8 0xF0 | u64 353 | descriptor (296) | u8 cache_flag | u64 offset |
u64 file offset of the data | u64 length | 32-byte sha256 digest of the file`.

File access is injected on the host, `read_file(offset, length)`, never asked for more than
READ_PIECE_BYTES at once; the member asks for its file in pieces of that size too. After an error a machine stays failed: the stream has
lost its framing and the tunnel drops the connection.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Callable

from meshdesk.core.rpc_commands import RpcStreamError

__all__ = [
    "DESCRIPTOR_BYTES", "MAX_MESSAGE_BYTES", "READ_PIECE_BYTES", "REFERENCE", "REFERENCE_PAYLOAD_BYTES",
    "SET_TENSOR", "SET_TENSOR_HEADER_BYTES", "RpcStreamError", "TrafficCounts", "WeightReferencer",
    "WeightTensor",
]

SET_TENSOR = 6
COMMAND_COUNT = 18  # rpc_cmd 0..17 are requests; 18 (RPC_CMD_NONE) never goes on the wire
DESCRIPTOR_BYTES = 296
SET_TENSOR_HEADER_BYTES = DESCRIPTOR_BYTES + 1 + 8
REFERENCE = 0xF0
MAX_MESSAGE_BYTES = 1 << 34
READ_PIECE_BYTES = 4 << 20

_MESSAGE_HEADER = struct.Struct("<BQ")
_SET_TENSOR_FIELDS = struct.Struct("<BQ")  # cache flag, offset: right after the descriptor
_REFERENCE_FIELDS = struct.Struct("<QQ32s")  # file offset of the data, length, file digest
REFERENCE_PAYLOAD_BYTES = SET_TENSOR_HEADER_BYTES + _REFERENCE_FIELDS.size
_NAME = slice(228, 292)


@dataclass(frozen=True)
class WeightTensor:
    """Where a tensor's bytes live in the GGUF file."""

    name: str
    file_offset: int
    nbytes: int


@dataclass
class TrafficCounts:
    """Bytes by kind. `other` is every non-weight byte put out, message headers included."""

    weights_sent_bytes: int = 0
    weights_referenced_bytes: int = 0
    other_bytes: int = 0


class _Stage(enum.Enum):
    MESSAGE_HEADER = "u8 cmd | u64 size"
    PASSTHROUGH = "payload bytes forwarded as they arrive"
    SET_TENSOR_HEADER = "descriptor | cache_flag | offset, held back"
    WEIGHT_DATA = "tensor bytes, held back while they match the file"
    REFERENCE_BODY = "a reference, expanded once complete"
    GRAPH_HEAD = "GRAPH_COMPUTE's device and node count, held back"
    GRAPH_PREFIX = "GRAPH_COMPUTE's nodes and tensor count, held back"


@dataclass(frozen=True)
class _SetTensorHeader:
    header: bytes  # the whole `cmd | size | descriptor | cache_flag | offset`, as received
    data_bytes: int

    @property
    def fields(self) -> bytes:
        return self.header[_MESSAGE_HEADER.size:]

    @property
    def name(self) -> str:
        raw = self.fields[_NAME].split(b"\0", 1)[0]
        return raw.decode("utf-8", errors="replace")

    @property
    def offset(self) -> int:
        return _SET_TENSOR_FIELDS.unpack_from(self.fields, DESCRIPTOR_BYTES)[1]


class _StreamMachine:
    """What both ends share: message headers, passthrough, fixed-size parts, failing for good."""

    _handlers: dict[_Stage, Callable[[_StreamMachine, bytes, int], int]]

    def __init__(self) -> None:
        self.counts = TrafficCounts()
        self._stage = _Stage.MESSAGE_HEADER
        self._pending = bytearray()  # a fixed-size part being assembled
        self._remaining = 0  # payload bytes left in the current stage
        self._passthrough_is_weight = False
        self._output: list[bytes] = []
        self._failure: Exception | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Output pieces, in order, for the next bytes of the stream."""
        if self._failure is not None:
            raise RpcStreamError(f"stream already failed: {self._failure}")
        data = bytes(data)
        position = 0
        try:
            while position < len(data):
                position = self._handlers[self._stage](self, data, position)
        except Exception as error:
            self._failure = error
            self._output = []
            raise
        output, self._output = self._output, []
        return output

    def _assemble(self, data: bytes, position: int, total: int) -> tuple[int, bytes | None]:
        """Collects a part of `total` bytes; returns it once complete."""
        end = min(len(data), position + total - len(self._pending))
        self._pending += data[position:end]
        if len(self._pending) < total:
            return end, None
        part = bytes(self._pending)
        self._pending.clear()
        return end, part

    def _read_message_header(self, data: bytes, position: int) -> int:
        position, header = self._assemble(data, position, _MESSAGE_HEADER.size)
        if header is not None:
            command, size = _MESSAGE_HEADER.unpack(header)
            if size > MAX_MESSAGE_BYTES:
                raise RpcStreamError(f"command {command} declares {size} bytes, over {MAX_MESSAGE_BYTES}")
            self._on_message_header(command, size, header)
        return position

    def _on_message_header(self, command: int, size: int, header: bytes) -> None:
        raise NotImplementedError

    def _pass_through(self, header: bytes, size: int, *, is_weight: bool = False) -> None:
        """Forwards `header` now and the next `size` payload bytes as they arrive."""
        self._emit_other(header)
        self._passthrough_is_weight = is_weight
        self._continue_with(_Stage.PASSTHROUGH, size)

    def _forward_payload(self, data: bytes, position: int) -> int:
        end = min(len(data), position + self._remaining)
        piece = data[position:end]
        self._output.append(piece)
        if self._passthrough_is_weight:
            self.counts.weights_sent_bytes += len(piece)
        else:
            self.counts.other_bytes += len(piece)
        self._continue_with(_Stage.PASSTHROUGH, self._remaining - len(piece))
        return end

    def _continue_with(self, stage: _Stage, remaining: int) -> None:
        """Enters `stage` for `remaining` bytes; with none left, the next message begins."""
        self._stage = stage if remaining else _Stage.MESSAGE_HEADER
        self._remaining = remaining

    def _emit_other(self, piece: bytes) -> None:
        self._output.append(piece)
        self.counts.other_bytes += len(piece)


def _check_command(command: int, *, accept_reference: bool) -> None:
    if command == REFERENCE and not accept_reference:
        raise RpcStreamError("a REFERENCE came from llama.cpp; only the tunnel itself may send one")
    if command >= COMMAND_COUNT and command != REFERENCE:
        raise RpcStreamError(f"unknown RPC command {command}")


class WeightReferencer(_StreamMachine):
    """Host side, sans-IO: feed bytes llama.cpp wrote; get bytes to send to the member.

    Only a SET_TENSOR is held back, and only while its bytes still match the file: llama.cpp
    writes a whole request before it waits for anything, so holding never stalls it. With
    `referable`, only those tensors (the ones the member holds) are referenced; every other
    weight's bytes travel, counted as weights sent.
    """

    def __init__(self, tensors: dict[str, WeightTensor], read_file: Callable[[int, int], bytes],
                 file_digest: str, max_buffer: int = 1 << 30, referable: frozenset[str] | None = None):
        super().__init__()
        self._tensors = tensors
        self._referable = referable  # names the member holds (None: all); others' bytes go through
        self._read_file = read_file
        self._digest = _digest_bytes(file_digest)
        self._max_buffer = max_buffer
        self._held: _SetTensorHeader | None = None
        self._held_data: list[bytes] = []
        self._data_file_offset = 0  # where the held message's data starts in the file
        self._next_file_offset = 0  # where the next data byte should be in the file

    def _on_message_header(self, command: int, size: int, header: bytes) -> None:
        _check_command(command, accept_reference=False)
        if command == SET_TENSOR and size >= SET_TENSOR_HEADER_BYTES:
            self._pending += header
            self._continue_with(_Stage.SET_TENSOR_HEADER, size)
        else:
            self._pass_through(header, size)

    def _read_set_tensor_header(self, data: bytes, position: int) -> int:
        position, header = self._assemble(data, position, _MESSAGE_HEADER.size + SET_TENSOR_HEADER_BYTES)
        if header is not None:
            self._decide(_SetTensorHeader(header, self._remaining - SET_TENSOR_HEADER_BYTES))
        return position

    def _decide(self, message: _SetTensorHeader) -> None:
        tensor = self._tensors.get(message.name)
        held = self._referable is None or message.name in self._referable
        if tensor is None or not held or not self._worth_comparing(message, tensor):
            self._pass_through(message.header, message.data_bytes, is_weight=tensor is not None)
            return
        self._held = message
        self._held_data = []
        self._data_file_offset = self._next_file_offset = tensor.file_offset + message.offset
        self._continue_with(_Stage.WEIGHT_DATA, message.data_bytes)

    def _worth_comparing(self, message: _SetTensorHeader, tensor: WeightTensor) -> bool:
        within_tensor = message.offset + message.data_bytes <= tensor.nbytes
        return 0 < message.data_bytes <= self._max_buffer and within_tensor

    def _compare_weight_data(self, data: bytes, position: int) -> int:
        end = min(len(data), position + self._remaining)
        piece = data[position:end]
        if not self._matches_file(piece):
            self._release_held(piece)
            return end
        self._held_data.append(piece)
        self._next_file_offset += len(piece)
        self._remaining -= len(piece)
        if self._remaining == 0:
            self._emit_reference()
            self._continue_with(_Stage.MESSAGE_HEADER, 0)
        return end

    def _matches_file(self, piece: bytes) -> bool:
        view = memoryview(piece)
        for start in range(0, len(piece), READ_PIECE_BYTES):
            expected = view[start:start + READ_PIECE_BYTES]
            if self._read_file(self._next_file_offset + start, len(expected)) != expected:
                return False
        return True

    def _emit_reference(self) -> None:
        assert self._held is not None
        length = self._held.data_bytes
        reference = _REFERENCE_FIELDS.pack(self._data_file_offset, length, self._digest)
        payload = self._held.fields + reference
        self._output.append(_MESSAGE_HEADER.pack(REFERENCE, len(payload)) + payload)
        self.counts.weights_referenced_bytes += length
        self._held, self._held_data = None, []

    def _release_held(self, mismatching_piece: bytes) -> None:
        """Gives up on the held message: sends what was held and streams the rest."""
        assert self._held is not None
        self._emit_other(self._held.header)
        for piece in [*self._held_data, mismatching_piece]:
            self._output.append(piece)
            self.counts.weights_sent_bytes += len(piece)
        self._held, self._held_data = None, []
        self._passthrough_is_weight = True
        self._continue_with(_Stage.PASSTHROUGH, self._remaining - len(mismatching_piece))

    _handlers = {
        _Stage.MESSAGE_HEADER: _StreamMachine._read_message_header,
        _Stage.PASSTHROUGH: _StreamMachine._forward_payload,
        _Stage.SET_TENSOR_HEADER: _read_set_tensor_header,
        _Stage.WEIGHT_DATA: _compare_weight_data,
    }


def _digest_bytes(file_digest: str) -> bytes:
    try:
        digest = bytes.fromhex(file_digest)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"file_digest must be a sha256 hex digest, got {file_digest!r}")
    return digest
