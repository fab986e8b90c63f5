"""The member's end of an rpc tunnel forwards only what a host sends, within bounds; references
expand in bounded pieces from the tensors its own GGUF index names."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.core.rpc_commands import (ALLOWED_FIXED_SIZES, COMMAND_NAMES, MAX_GRAPH_NODES, MAX_GRAPH_TENSORS,
                                        SMALL_SET_TENSOR_BYTES, CommandLimits, check_request)
from meshdesk.core.rpc_expander import MAX_HELD_BYTES, FilePiece, ReferenceExpander
from meshdesk.core.rpc_stream import READ_PIECE_BYTES, REFERENCE, SET_TENSOR, RpcStreamError, WeightTensor
from tests.test_core_rpc_stream import (DIGEST, EMBD, GRAPH_COMPUTE, TENSORS, descriptor, graph, message, reference,
                                        request, set_tensor)

HUGE = WeightTensor("blk.9.ffn_down.weight", 1 << 20, 3 * READ_PIECE_BYTES + 5)
FILES = {DIGEST: {**TENSORS, HUGE.name: HUGE}}


def expander(limits: CommandLimits | None = None) -> ReferenceExpander:
    return ReferenceExpander(FILES, limits)


def feed_all(machine: ReferenceExpander, stream: bytes, size: int = 1 << 20) -> list:
    output = []
    for start in range(0, len(stream), size):
        output += machine.feed(stream[start:start + size])
        assert machine.buffered <= MAX_HELD_BYTES
    return output


def refused(stream: bytes, complaint: str, machine: ReferenceExpander | None = None) -> None:
    with pytest.raises(RpcStreamError, match=complaint):
        feed_all(machine or expander(), stream, 7)


# --- the table --------------------------------------------------------------------------------------

def test_the_table_is_llama_cpps_rpc_protocol_7():
    assert COMMAND_NAMES[SET_TENSOR] == "SET_TENSOR" and COMMAND_NAMES[14] == "HELLO" and len(COMMAND_NAMES) == 18
    assert set(ALLOWED_FIXED_SIZES) == set(range(18)) - {SET_TENSOR, GRAPH_COMPUTE}
    # sizes a real split sent (tests/test_split.py's model), and the client's sizeof(request)
    assert (ALLOWED_FIXED_SIZES[0], ALLOWED_FIXED_SIZES[13], ALLOWED_FIXED_SIZES[14]) == (12, 3260, 24)


@pytest.mark.parametrize("command", sorted(ALLOWED_FIXED_SIZES) + [GRAPH_COMPUTE])
def test_every_request_a_host_sends_passes_unchanged(command):
    stream = request(command, 5) + request(command)
    assert b"".join(feed_all(expander(), stream, 3)) == stream


@pytest.mark.parametrize("command", sorted(ALLOWED_FIXED_SIZES))
@pytest.mark.parametrize("change", [-1, 1, 1 << 20])
def test_a_fixed_size_request_of_another_size_closes_the_tunnel(command, change):
    size = ALLOWED_FIXED_SIZES[command] + change
    if size < 0:
        return
    refused(struct.pack("<BQ", command, size), f"{COMMAND_NAMES[command]} of {size} bytes")


@pytest.mark.parametrize("command", [18, 19, 0x7F, 0xEF, 0xF1, 0xFF])
def test_commands_outside_the_table_close_the_tunnel(command):
    refused(message(command), f"command {command} is not a request a host sends")


def test_set_tensor_data_is_bounded_by_the_largest_driven_tensor():
    machine = expander()
    limit = max(SMALL_SET_TENSOR_BYTES, HUGE.nbytes)
    header = struct.pack("<BQ", SET_TENSOR, 305 + limit)
    assert feed_all(machine, header) == [header]  # passes as it streams
    refused(struct.pack("<BQ", SET_TENSOR, 305 + limit + 1), "SET_TENSOR of")
    big = ReferenceExpander({DIGEST: {"x": WeightTensor("x", 0, 1 << 30)}})
    assert big.feed(struct.pack("<BQ", SET_TENSOR, 305 + (1 << 30)))
    refused(message(SET_TENSOR, descriptor("x")), "SET_TENSOR of 296 bytes")


@pytest.mark.parametrize("payload, complaint", [
    (struct.pack("<II", 0, MAX_GRAPH_NODES + 1) + bytes(8 * 3), "nodes, at most"),
    (graph(3, 2)[:-1], "cannot hold 3 nodes and whole tensors"),
    (graph(3, 2) + bytes(1), "cannot hold"),
    (struct.pack("<II", 0, 10) + bytes(20), "cannot hold 10 nodes"),
    (graph(3, 2).replace(struct.pack("<I", 2), struct.pack("<I", 7), 1)[:8] + graph(3, 2)[8:32]
     + struct.pack("<I", 7) + graph(3, 2)[36:], "declares 7 tensors, its size holds 2"),
    (bytes(11), "GRAPH_COMPUTE of 11 bytes"),
])
def test_a_malformed_graph_closes_the_tunnel_before_it_reaches_the_worker(payload, complaint):
    machine = expander()
    stream = message(GRAPH_COMPUTE, payload)
    emitted = []
    with pytest.raises(RpcStreamError, match=complaint):
        for byte in range(len(stream)):
            emitted += machine.feed(stream[byte:byte + 1])
    assert emitted == []  # the worker saw nothing of it


def test_a_graph_at_its_bounds_is_held_no_longer_than_its_counts():
    stream = message(GRAPH_COMPUTE, graph(MAX_GRAPH_NODES, 1))
    machine = expander()
    output = feed_all(machine, stream, 1 << 16)
    assert b"".join(output) == stream
    check_request(GRAPH_COMPUTE, 12 + 8 * MAX_GRAPH_NODES + 296 * MAX_GRAPH_TENSORS, CommandLimits())


# --- references: inside the member's own tensors, expanded in pieces ----------------------------------

def test_a_reference_expands_into_bounded_file_pieces_not_bytes_in_memory():
    machine = expander()
    output = machine.feed(reference(HUGE.name, 0, HUGE.file_offset, HUGE.nbytes, DIGEST))
    header, pieces = output[0], output[1:]
    assert header == struct.pack("<BQ", SET_TENSOR, 305 + HUGE.nbytes) + set_tensor(HUGE.name, 0, b"")[9:]
    assert all(isinstance(piece, FilePiece) and 0 < piece.length <= READ_PIECE_BYTES for piece in pieces)
    assert [piece.offset for piece in pieces] == [HUGE.file_offset + i * READ_PIECE_BYTES for i in range(4)]
    assert sum(piece.length for piece in pieces) == HUGE.nbytes == machine.counts.weights_referenced_bytes
    assert machine.buffered == 0


def test_a_reference_at_the_end_of_a_tensor_is_allowed_one_byte_past_is_not():
    tail = reference(EMBD.name, EMBD.nbytes - 3, EMBD.file_offset + EMBD.nbytes - 3, 3, DIGEST)
    assert sum(piece.length for piece in expander().feed(tail)[1:]) == 3
    refused(reference(EMBD.name, EMBD.nbytes - 3, EMBD.file_offset + EMBD.nbytes - 3, 4, DIGEST), "lies outside")


def test_a_reference_to_another_tensors_bytes_is_refused():
    other = TENSORS["blk.0.attn_q.weight"]
    refused(reference(EMBD.name, 0, other.file_offset, 10, DIGEST), "not token_embd.weight's data")


def test_a_file_piece_that_comes_back_short_is_a_stream_error():
    piece = FilePiece(DIGEST, 10, 4)
    assert piece.check(b"abcd") == b"abcd"
    with pytest.raises(RpcStreamError, match="gave 3 bytes at 10"):
        piece.check(b"abc")


# --- whatever arrives: allowed commands pass, anything else closes, the buffer stays bounded ----------

@st.composite
def allowed_requests(draw):
    command = draw(st.sampled_from(sorted(ALLOWED_FIXED_SIZES) + [GRAPH_COMPUTE, SET_TENSOR]))
    if command == SET_TENSOR:
        return set_tensor("inp_embd", draw(st.integers(0, 99)), draw(st.binary(max_size=50)))
    if command == GRAPH_COMPUTE:
        return message(command, graph(draw(st.integers(0, 20)), draw(st.integers(0, 3)), draw(st.integers(0, 255))))
    return request(command, draw(st.integers(0, 255)))


@st.composite
def any_requests(draw):
    """Allowed requests, with bytes flipped, truncated or extended here and there."""
    raw = bytearray(draw(allowed_requests()))
    mutation = draw(st.sampled_from(["none", "flip", "truncate", "extend", "random"]))
    if mutation == "flip":
        raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    elif mutation == "truncate":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif mutation == "extend":
        raw += draw(st.binary(min_size=1, max_size=20))
    elif mutation == "random":
        raw = bytearray(draw(st.binary(max_size=400)))
    return bytes(raw)


pieces = st.lists(st.integers(1, 600), min_size=1, max_size=10)


def feed_in(machine: ReferenceExpander, stream: bytes, sizes: list[int]) -> tuple[bytes, bool]:
    """The bytes passed on, and whether the machine closed the tunnel (an RpcStreamError)."""
    output, position, index = [], 0, 0
    try:
        while position < len(stream):
            size = sizes[index % len(sizes)]
            produced = machine.feed(stream[position:position + size])
            assert all(isinstance(part, (bytes, FilePiece)) for part in produced)
            output += [part for part in produced if isinstance(part, bytes)]
            assert machine.buffered <= MAX_HELD_BYTES
            position, index = position + size, index + 1
    except RpcStreamError as error:
        assert "\n" not in str(error)
        return b"".join(output), True
    return b"".join(output), False


@settings(max_examples=300, deadline=None)
@given(st.lists(allowed_requests(), max_size=8), pieces)
def test_any_stream_of_allowed_requests_passes_byte_identical(requests, sizes):
    stream = b"".join(requests)
    assert feed_in(expander(), stream, sizes) == (stream, False)


@settings(max_examples=400, deadline=None)
@given(st.lists(any_requests(), max_size=6), pieces)
def test_any_byte_stream_passes_as_allowed_requests_or_closes(requests, sizes):
    stream = b"".join(requests)
    passed, closed = feed_in(expander(), stream, sizes)
    assert stream.startswith(passed)  # never more, never other bytes than arrived
    if not closed:
        assert_all_allowed(passed)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), pieces)
def test_arbitrary_bytes_never_raise_anything_else(stream, sizes):
    feed_in(expander(), stream, sizes)
    feed_in(expander(), message(REFERENCE, stream[:353]) + stream, sizes)


def assert_all_allowed(stream: bytes) -> None:
    """Whole requests each within the allow-list, then maybe the start of one."""
    position = 0
    while position + 9 <= len(stream):
        command, size = struct.unpack_from("<BQ", stream, position)
        check_request(command, size, CommandLimits.for_tensors(HUGE.nbytes))
        position += 9 + size
