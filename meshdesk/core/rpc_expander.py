"""The member's end of an rpc tunnel, sans-IO: only what a host may send, references expanded.

Bytes from the tunnel go in (`feed`); out come, in order, bytes for the local rpc worker and
`FilePiece`s: "send these bytes of your own copy of this file next". A reference thus never
makes the member gather a tensor in memory: the node reads and writes each piece (at most
READ_PIECE_BYTES), waiting for the worker to take it before the next.

What is refused (RpcStreamError, and the machine stays failed):
- any request not in the allow-list of `core.rpc_commands`, or outside its size bounds;
- a GRAPH_COMPUTE whose counts do not add up (its head is held back until checked);
- a reference to a file this host does not drive here, to a tensor that file's GGUF index
  does not name, or to bytes outside that tensor's data.

With `keep` (tensors of a member's share that its layer cache lacks), a SET_TENSOR that
uploads one such tensor whole goes to the worker as `KeptPiece`s: bytes for the worker that the
node also writes into its cache at that tensor's place (`node.layer_cache`), counted as weights
sent. Its header is held back until its name and offset are known.

The machine never holds more than `MAX_HELD_BYTES` of the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshdesk.core.rpc_commands import (
    GRAPH_COMPUTE, GRAPH_HEAD_BYTES, MAX_GRAPH_NODES, CommandLimits, RpcStreamError, check_graph_head,
    check_graph_tensor_count, check_request,
)
from meshdesk.core.rpc_stream import (
    _MESSAGE_HEADER, _REFERENCE_FIELDS, READ_PIECE_BYTES, REFERENCE, REFERENCE_PAYLOAD_BYTES, SET_TENSOR,
    SET_TENSOR_HEADER_BYTES, WeightTensor, _SetTensorHeader, _Stage, _StreamMachine,
)

__all__ = ["MAX_HELD_BYTES", "FilePiece", "KeptPiece", "ReferenceExpander"]

MAX_HELD_BYTES = _MESSAGE_HEADER.size + max(REFERENCE_PAYLOAD_BYTES, GRAPH_HEAD_BYTES + 8 * MAX_GRAPH_NODES + 4)

TensorTable = Mapping[str, WeightTensor]  # tensor name -> where its data lies in the file


@dataclass(frozen=True)
class FilePiece:
    """`length` bytes of the member's own file `digest`, from `offset`, go to the worker next."""

    digest: str
    offset: int
    length: int

    def check(self, data: bytes) -> bytes:
        """The bytes read for this piece, or RpcStreamError if the file gave fewer."""
        if len(data) != self.length:
            raise RpcStreamError(f"file {self.digest[:16]} gave {len(data)} bytes at {self.offset}, "
                                 f"the reference wants {self.length}")
        return data


@dataclass(frozen=True)
class KeptPiece:
    """Bytes for the worker, which are also `tensor`'s bytes from `start` (its first is 0);
    `last` marks the tensor's final piece."""

    tensor: str
    start: int
    data: bytes
    last: bool


class ReferenceExpander(_StreamMachine):
    """Member side: feed bytes from the tunnel; get bytes and FilePieces for the local rpc worker.

    `files` maps each model digest the connected host drives here to its tensor table, from
    this member's own GGUF index. `weights_referenced_bytes` counts the data of expanded
    references, `other_bytes` everything else.
    """

    def __init__(self, files: Mapping[str, TensorTable], limits: CommandLimits | None = None,
                 keep: TensorTable | None = None):
        super().__init__()
        self._files = files
        self._keep = keep or {}
        self._kept: tuple[str, int, int] | None = None  # tensor, next start, nbytes
        tables = [*files.values(), self._keep]
        largest = max((tensor.nbytes for table in tables for tensor in table.values()), default=0)
        self._limits = limits or CommandLimits.for_tensors(largest)
        self._graph_size = 0
        self._graph_tensors = 0

    @property
    def buffered(self) -> int:
        """Stream bytes held back right now (never more than MAX_HELD_BYTES)."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[bytes | FilePiece | KeptPiece]:  # type: ignore[override]
        return super().feed(data)

    def _on_message_header(self, command: int, size: int, header: bytes) -> None:
        if command == REFERENCE:
            if size != REFERENCE_PAYLOAD_BYTES:
                raise RpcStreamError(f"a reference of {size} bytes, expected {REFERENCE_PAYLOAD_BYTES}")
            self._continue_with(_Stage.REFERENCE_BODY, size)
            return
        check_request(command, size, self._limits)
        if command == GRAPH_COMPUTE:
            self._pending += header
            self._graph_size = size
            self._continue_with(_Stage.GRAPH_HEAD, size)
        elif command == SET_TENSOR and self._keep:
            self._pending += header
            self._continue_with(_Stage.SET_TENSOR_HEADER, size)
        else:
            self._pass_through(header, size)

    # --- GRAPH_COMPUTE: held back until its counts add up -----------------------------------

    def _read_graph_head(self, data: bytes, position: int) -> int:
        position, part = self._assemble(data, position, _MESSAGE_HEADER.size + GRAPH_HEAD_BYTES)
        if part is not None:
            prefix, self._graph_tensors = check_graph_head(part[_MESSAGE_HEADER.size:], self._graph_size)
            self._pending += part
            self._continue_with(_Stage.GRAPH_PREFIX, prefix)
        return position

    def _read_graph_prefix(self, data: bytes, position: int) -> int:
        prefix = self._remaining
        position, part = self._assemble(data, position, _MESSAGE_HEADER.size + prefix)
        if part is not None:
            check_graph_tensor_count(part[-4:], self._graph_tensors)
            self._pass_through(part, self._graph_size - prefix)
        return position

    # --- SET_TENSORs of tensors the layer cache lacks ----------------------------------------

    def _read_set_tensor_header(self, data: bytes, position: int) -> int:
        position, part = self._assemble(data, position, _MESSAGE_HEADER.size + SET_TENSOR_HEADER_BYTES)
        if part is not None:
            message = _SetTensorHeader(part, self._remaining - SET_TENSOR_HEADER_BYTES)
            tensor = self._keep.get(message.name)
            if tensor is not None and message.offset == 0 and message.data_bytes == tensor.nbytes:
                self._emit_other(part)
                self._kept = (tensor.name, 0, tensor.nbytes)
                self._continue_with(_Stage.WEIGHT_DATA, message.data_bytes)
            else:
                self._pass_through(part, message.data_bytes)
        return position

    def _keep_data(self, data: bytes, position: int) -> int:
        assert self._kept is not None
        name, start, nbytes = self._kept
        end = min(len(data), position + self._remaining)
        piece = data[position:end]
        self._kept = (name, start + len(piece), nbytes)
        self._output.append(KeptPiece(name, start, piece, start + len(piece) == nbytes))
        self.counts.weights_sent_bytes += len(piece)
        self._continue_with(_Stage.WEIGHT_DATA, self._remaining - len(piece))
        return end

    # --- references ----------------------------------------------------------------------------

    def _read_reference(self, data: bytes, position: int) -> int:
        position, body = self._assemble(data, position, REFERENCE_PAYLOAD_BYTES)
        if body is not None:
            self._expand(body)
            self._continue_with(_Stage.MESSAGE_HEADER, 0)
        return position

    def _expand(self, body: bytes) -> None:
        fields = body[:SET_TENSOR_HEADER_BYTES]
        file_offset, length, digest = _REFERENCE_FIELDS.unpack_from(body, SET_TENSOR_HEADER_BYTES)
        self._check_reference(_SetTensorHeader(_MESSAGE_HEADER.pack(SET_TENSOR, 0) + fields, length),
                              digest.hex(), file_offset)
        self._emit_other(_MESSAGE_HEADER.pack(SET_TENSOR, SET_TENSOR_HEADER_BYTES + length) + fields)
        for start in range(0, length, READ_PIECE_BYTES):
            wanted = min(READ_PIECE_BYTES, length - start)
            self._output.append(FilePiece(digest.hex(), file_offset + start, wanted))
            self.counts.weights_referenced_bytes += wanted

    def _check_reference(self, message: _SetTensorHeader, digest_hex: str, file_offset: int) -> None:
        table = self._files.get(digest_hex)
        if table is None:
            raise RpcStreamError(f"a reference to unknown file {digest_hex[:16]}")
        tensor = table.get(message.name)
        if tensor is None:
            raise RpcStreamError(f"a reference to tensor {message.name[:64]!r}, which file {digest_hex[:16]} lacks")
        offset, length = message.offset, message.data_bytes
        if not 0 < length <= tensor.nbytes - offset:
            raise RpcStreamError(f"a reference of {length} data bytes at {offset} lies outside "
                                 f"{tensor.name} ({tensor.nbytes} bytes)")
        if file_offset != tensor.file_offset + offset:
            raise RpcStreamError(f"a reference to file offset {file_offset}, not {tensor.name}'s data "
                                 f"at {tensor.file_offset + offset}")

    _handlers = {
        _Stage.MESSAGE_HEADER: _StreamMachine._read_message_header,
        _Stage.PASSTHROUGH: _StreamMachine._forward_payload,
        _Stage.REFERENCE_BODY: _read_reference,
        _Stage.SET_TENSOR_HEADER: _read_set_tensor_header,
        _Stage.WEIGHT_DATA: _keep_data,
        _Stage.GRAPH_HEAD: _read_graph_head,
        _Stage.GRAPH_PREFIX: _read_graph_prefix,
    }
