"""Zero-transfer weights on the llama.cpp RPC stream: host referencer, member expander, round trips."""

from __future__ import annotations

import hashlib
import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.core import rpc_stream
from meshdesk.core.rpc_stream import (
    DESCRIPTOR_BYTES,
    MAX_MESSAGE_BYTES,
    READ_PIECE_BYTES,
    REFERENCE,
    SET_TENSOR,
    SET_TENSOR_HEADER_BYTES,
    RpcStreamError,
    TrafficCounts,
    WeightReferencer,
    WeightTensor,
)
from meshdesk.core.rpc_commands import ALLOWED_FIXED_SIZES
from meshdesk.core.rpc_expander import FilePiece, ReferenceExpander

# --- encoding RPC traffic the way llama.cpp does -------------------------------------------------

HELLO, ALLOC_BUFFER, GET_ALIGNMENT, BUFFER_GET_BASE, GRAPH_COMPUTE, MEMSET_TENSOR = 14, 0, 1, 3, 10, 17
OTHER_COMMANDS = [command for command in range(18) if command != SET_TENSOR]


def request(command: int, filler: int = 0) -> bytes:
    """A request of `command` as a host sends it: its fixed size, or a well-formed graph."""
    if command == GRAPH_COMPUTE:
        return message(command, graph(3, 2, filler))
    return message(command, bytes([filler]) * ALLOWED_FIXED_SIZES[command])


def graph(nodes: int, tensors: int, filler: int = 0) -> bytes:
    """GRAPH_COMPUTE's payload: device, n_nodes, node ids, n_tensors, rpc_tensors."""
    return (struct.pack("<II", 0, nodes) + bytes([filler]) * (8 * nodes) + struct.pack("<I", tensors)
            + bytes([filler]) * (DESCRIPTOR_BYTES * tensors))


def message(command: int, payload: bytes = b"") -> bytes:
    return struct.pack("<BQ", command, len(payload)) + payload


def descriptor(name: str, ne=(64, 16, 1, 1), data_address: int = 0x7F00_0000_1000) -> bytes:
    """A packed rpc_tensor: id, type, buffer, ne[4], nb[4], ..., data at 220, name at 228..292."""
    raw = bytearray(DESCRIPTOR_BYTES)
    struct.pack_into("<QIQ", raw, 0, 0xABCDEF, 12, 0x5555_0000)
    struct.pack_into("<4I", raw, 20, *ne)
    struct.pack_into("<Q", raw, 220, data_address)
    encoded = name.encode()
    raw[228:228 + len(encoded)] = encoded
    struct.pack_into("<i", raw, 292, 3)  # use_count, the last field: must survive untouched
    return bytes(raw)


def set_tensor(name: str, offset: int, data: bytes, cache_flag: int = 0) -> bytes:
    return message(SET_TENSOR, descriptor(name) + struct.pack("<BQ", cache_flag, offset) + data)


def reference(name: str, offset: int, file_offset: int, length: int, digest: str, cache_flag: int = 0) -> bytes:
    """The layout pinned by this test, written out independently of the module."""
    payload = (descriptor(name) + struct.pack("<BQ", cache_flag, offset)
               + struct.pack("<QQ", file_offset, length) + bytes.fromhex(digest))
    return struct.pack("<BQ", 0xF0, len(payload)) + payload


# --- a fake GGUF and fake file access ------------------------------------------------------------

def build_gguf(sizes: dict[str, int], seed: int = 7) -> tuple[bytes, dict[str, WeightTensor]]:
    generator = random.Random(seed)
    content = bytearray(b"GGUF" + generator.randbytes(60))
    tensors = {}
    for name, nbytes in sizes.items():
        content += bytes(-len(content) % 32)  # GGUF aligns tensor data
        tensors[name] = WeightTensor(name, len(content), nbytes)
        content += generator.randbytes(nbytes)
    return bytes(content), tensors


GGUF, TENSORS = build_gguf({"token_embd.weight": 1000, "blk.0.attn_q.weight": 333, "output_norm.weight": 17})
DIGEST = hashlib.sha256(GGUF).hexdigest()
EMBD = TENSORS["token_embd.weight"]
ATTN_Q = TENSORS["blk.0.attn_q.weight"]


def weight_bytes(tensor: WeightTensor, offset: int = 0, length: int | None = None, gguf: bytes = GGUF) -> bytes:
    length = tensor.nbytes - offset if length is None else length
    start = tensor.file_offset + offset
    return gguf[start:start + length]


class FakeFile:
    """The GGUF in memory; asserts nobody reads more than one piece at once."""

    def __init__(self, content: bytes = GGUF, digest: str = DIGEST):
        self.content = content
        self.digest = digest
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        assert 0 < length <= READ_PIECE_BYTES, length
        self.reads.append((offset, length))
        return self.content[offset:offset + length]

    def read_by_digest(self, digest: str, offset: int, length: int) -> bytes:
        assert digest == self.digest
        return self.read(offset, length)


def host(file: FakeFile | None = None, tensors=TENSORS, **options) -> WeightReferencer:
    file = file or FakeFile()
    return WeightReferencer(tensors, file.read, file.digest, **options)


class Member:
    """The member's expander with its FilePieces read from a fake file, as the node reads them."""

    def __init__(self, file: FakeFile, tensors):
        self.machine = ReferenceExpander({file.digest: tensors})
        self.file = file

    @property
    def counts(self) -> TrafficCounts:
        return self.machine.counts

    def feed(self, data: bytes) -> list[bytes]:
        return [part.check(self.file.read_by_digest(part.digest, part.offset, part.length))
                if isinstance(part, FilePiece) else part for part in self.machine.feed(data)]


def member(file: FakeFile | None = None, tensors=TENSORS) -> Member:
    return Member(file or FakeFile(), tensors)


def chop(data: bytes, sizes) -> list[bytes]:
    pieces, position = [], 0
    for size in itertools.cycle(sizes):
        if position >= len(data):
            return pieces
        pieces.append(data[position:position + size])
        position += size
    return pieces


def run(machine, pieces) -> list[bytes]:
    output = []
    for piece in pieces:
        produced = machine.feed(piece)
        assert isinstance(produced, list) and all(isinstance(part, bytes) for part in produced)
        output += produced
    return output


def relay(stream: bytes, host_sizes=(1 << 20,), member_sizes=(1 << 20,)) -> tuple[bytes, bytes]:
    """The host's output for `stream` and what the member hands its rpc server."""
    sent = b"".join(run(host(), chop(stream, host_sizes)))
    delivered = b"".join(run(member(), chop(sent, member_sizes)))
    return sent, delivered


def mixed_stream() -> bytes:
    """Loading then one decoding step, much as llama.cpp talks to an rpc server."""
    return b"".join([
        message(HELLO, bytes(24)),
        message(GET_ALIGNMENT, struct.pack("<I", 0)),
        message(ALLOC_BUFFER, struct.pack("<IQ", 0, 4096)),
        message(BUFFER_GET_BASE, struct.pack("<Q", 1)),
        set_tensor("token_embd.weight", 0, weight_bytes(EMBD)),
        set_tensor("blk.0.attn_q.weight", 100, weight_bytes(ATTN_Q, 100, 50), cache_flag=1),
        set_tensor("output_norm.weight", 0, weight_bytes(TENSORS["output_norm.weight"])),
        set_tensor("inp_embd", 0, bytes(range(200))),
        set_tensor("blk.0.attn_q.weight", 0, b"\xff" + weight_bytes(ATTN_Q, 1)),
        message(GRAPH_COMPUTE, graph(5, 3, filler=7)),
        request(MEMSET_TENSOR),
    ])


# --- public surface --------------------------------------------------------------------------------

def test_public_surface_and_constants():
    assert (SET_TENSOR, DESCRIPTOR_BYTES, SET_TENSOR_HEADER_BYTES) == (6, 296, 305)
    assert (REFERENCE, MAX_MESSAGE_BYTES, READ_PIECE_BYTES) == (0xF0, 1 << 34, 4 << 20)
    assert rpc_stream.REFERENCE_PAYLOAD_BYTES == 305 + 8 + 8 + 32
    assert issubclass(RpcStreamError, ValueError)
    assert TrafficCounts() == TrafficCounts(weights_sent_bytes=0, weights_referenced_bytes=0, other_bytes=0)
    assert sorted(rpc_stream.__all__) == sorted([
        "DESCRIPTOR_BYTES", "MAX_MESSAGE_BYTES", "READ_PIECE_BYTES", "REFERENCE", "REFERENCE_PAYLOAD_BYTES",
        "SET_TENSOR", "SET_TENSOR_HEADER_BYTES", "RpcStreamError", "TrafficCounts",
        "WeightReferencer", "WeightTensor"])


def test_file_digest_must_be_sha256_hex():
    with pytest.raises(ValueError, match="sha256"):
        WeightReferencer(TENSORS, FakeFile().read, "abc")


# --- everything but weights passes untouched -------------------------------------------------------

@pytest.mark.parametrize("command", OTHER_COMMANDS)
def test_other_commands_pass_byte_identical(command):
    stream = request(command, 37) + request(command)
    for machine in (host(), member()):
        assert b"".join(run(machine, [stream])) == stream
        assert machine.counts == TrafficCounts(other_bytes=len(stream))


def test_other_commands_stream_without_waiting_for_the_whole_message():
    referencer = host()
    graph = message(GRAPH_COMPUTE, bytes(range(100)))
    assert referencer.feed(graph[:5]) == []  # a header cannot be judged before its size is known
    assert b"".join(referencer.feed(graph[5:20])) == graph[:20]
    assert b"".join(referencer.feed(graph[20:])) == graph[20:]


def test_unknown_tensor_names_pass_unchanged_as_other_traffic():
    stream = set_tensor("inp_pos", 0, weight_bytes(EMBD, 0, 64))  # same bytes as a weight, but not one
    sent, delivered = relay(stream)
    assert sent == delivered == stream
    referencer = host()
    run(referencer, [stream])
    assert referencer.counts == TrafficCounts(other_bytes=len(stream))


def test_set_tensor_too_short_for_its_header_passes_the_host_and_stops_at_the_member():
    stream = message(SET_TENSOR, descriptor("token_embd.weight")[:200])
    assert b"".join(run(host(), [stream])) == stream
    with pytest.raises(RpcStreamError, match="SET_TENSOR of 200 bytes"):
        run(member(), [stream])


# --- matching weights become references and come back identical -----------------------------------

@pytest.mark.parametrize("offset, length", [
    (0, EMBD.nbytes),  # the whole tensor, as llama.cpp loads it
    (100, 400),  # a slice inside
    (0, 1),
    (EMBD.nbytes - 7, 7),  # ends exactly at the tensor's end
])
def test_matching_set_tensor_becomes_a_reference_and_expands_back(offset, length):
    original = set_tensor("token_embd.weight", offset, weight_bytes(EMBD, offset, length), cache_flag=1)
    expected = reference("token_embd.weight", offset, EMBD.file_offset + offset, length, DIGEST, cache_flag=1)
    referencer, expander = host(), member()

    sent = run(referencer, [original])
    delivered = run(expander, sent)

    assert sent == [expected]
    assert b"".join(delivered) == original
    assert referencer.counts == TrafficCounts(weights_referenced_bytes=length)
    assert expander.counts == TrafficCounts(weights_referenced_bytes=length, other_bytes=9 + SET_TENSOR_HEADER_BYTES)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_weight_differing_in_one_byte_passes_unchanged_as_weights_sent(where):
    data = bytearray(weight_bytes(ATTN_Q))
    index = {"start": 0, "middle": len(data) // 2, "end": len(data) - 1}[where]
    data[index] ^= 0x01
    original = set_tensor("blk.0.attn_q.weight", 0, bytes(data))
    for sizes in ([len(original)], [1], [3, 50, 7]):
        referencer = host()
        assert b"".join(run(referencer, chop(original, sizes))) == original
        assert referencer.counts == TrafficCounts(weights_sent_bytes=len(data), other_bytes=9 + SET_TENSOR_HEADER_BYTES)
    assert relay(original, (1,), (2,)) == (original, original)


def test_after_a_mismatch_the_rest_streams_without_holding():
    data = bytearray(weight_bytes(EMBD))
    data[10] ^= 0xFF
    original = set_tensor("token_embd.weight", 0, bytes(data))
    referencer = host()
    first = 9 + SET_TENSOR_HEADER_BYTES + 20
    assert b"".join(referencer.feed(original[:first])) == original[:first]
    assert b"".join(referencer.feed(original[first:first + 5])) == original[first:first + 5]


def test_a_matching_prefix_is_held_until_the_message_is_decided():
    original = set_tensor("token_embd.weight", 0, weight_bytes(EMBD))
    referencer = host()
    assert referencer.feed(original[:-1]) == []
    assert referencer.feed(original[-1:]) == [reference("token_embd.weight", 0, EMBD.file_offset, EMBD.nbytes, DIGEST)]


@pytest.mark.parametrize("offset, length", [(1, EMBD.nbytes), (EMBD.nbytes, 1), (2**64 - 1, 1)])
def test_a_range_outside_the_tensor_passes_unchanged(offset, length):
    start = EMBD.file_offset + offset % EMBD.nbytes
    original = set_tensor("token_embd.weight", offset, GGUF[start:start + length].ljust(length, b"\0"))
    referencer = host()
    assert b"".join(run(referencer, [original])) == original
    assert referencer.counts.weights_sent_bytes == length


def test_a_host_file_shorter_than_the_table_says_means_sending():
    tensors = {"tail": WeightTensor("tail", len(GGUF) - 10, 20)}
    original = set_tensor("tail", 0, GGUF[-10:] + bytes(10))
    referencer = host(tensors=tensors)
    assert b"".join(run(referencer, [original])) == original
    assert referencer.counts.weights_sent_bytes == 20


def test_max_buffer_bounds_what_is_held():
    original = set_tensor("token_embd.weight", 0, weight_bytes(EMBD))
    too_small, just_enough = host(max_buffer=EMBD.nbytes - 1), host(max_buffer=EMBD.nbytes)
    assert b"".join(run(too_small, chop(original, [100]))) == original
    assert too_small.counts.weights_sent_bytes == EMBD.nbytes
    assert run(just_enough, [original])[0][0] == REFERENCE


def test_large_tensors_are_compared_and_expanded_in_bounded_reads():
    big_gguf, big_tensors = build_gguf({"huge.weight": 2 * READ_PIECE_BYTES + 12345}, seed=3)
    digest = hashlib.sha256(big_gguf).hexdigest()
    tensor = big_tensors["huge.weight"]
    original = set_tensor("huge.weight", 0, weight_bytes(tensor, gguf=big_gguf))
    host_file, member_file = FakeFile(big_gguf, digest), FakeFile(big_gguf, digest)

    sent = run(host(host_file, big_tensors), [original])
    delivered = run(member(member_file, big_tensors), sent)

    assert len(b"".join(sent)) == 9 + rpc_stream.REFERENCE_PAYLOAD_BYTES
    assert b"".join(delivered) == original
    for file in (host_file, member_file):  # FakeFile also asserts each read is at most one piece
        assert len(file.reads) == 3 and sum(length for _, length in file.reads) == tensor.nbytes


# --- whole streams, any chunking -------------------------------------------------------------------

def test_round_trip_of_a_mixed_stream_in_one_piece():
    stream = mixed_stream()
    sent, delivered = relay(stream)
    assert delivered == stream
    referenced = EMBD.nbytes + 50 + TENSORS["output_norm.weight"].nbytes
    reference_overhead = 8 + 8 + 32  # each reference carries file offset, length, digest instead
    assert len(sent) == len(stream) - referenced + 3 * reference_overhead  # the weights did not travel


def test_round_trip_in_one_byte_pieces():
    stream = mixed_stream()
    assert relay(stream, (1,), (1,)) == relay(stream)
    assert relay(stream, (1,), (1,))[1] == stream


def test_round_trip_in_random_pieces():
    stream, generator = mixed_stream(), random.Random(2024)
    whole = relay(stream)
    for _ in range(50):
        host_sizes = [generator.randint(1, 400) for _ in range(30)]
        member_sizes = [generator.randint(1, 400) for _ in range(30)]
        assert relay(stream, host_sizes, member_sizes) == whole


def test_counts_of_a_mixed_stream():
    referencer = host()
    sent = b"".join(run(referencer, [mixed_stream()]))
    referenced = EMBD.nbytes + 50 + TENSORS["output_norm.weight"].nbytes
    reference_messages = 3 * (9 + rpc_stream.REFERENCE_PAYLOAD_BYTES)
    assert referencer.counts.weights_referenced_bytes == referenced
    assert referencer.counts.weights_sent_bytes == ATTN_Q.nbytes
    assert len(sent) == referencer.counts.other_bytes + referencer.counts.weights_sent_bytes + reference_messages


@st.composite
def traffic(draw):
    """One request: (what llama.cpp sends, what the host should send, referenced bytes, weight bytes sent)."""
    kind = draw(st.sampled_from(["other", "match", "mismatch", "unknown name"]))
    if kind == "other":
        original = request(draw(st.sampled_from(OTHER_COMMANDS)), draw(st.integers(0, 255)))
        return original, original, 0, 0
    if kind == "unknown name":
        original = set_tensor("kq_mask", 0, draw(st.binary(max_size=40)))
        return original, original, 0, 0
    tensor = draw(st.sampled_from(sorted(TENSORS.values(), key=lambda tensor: tensor.name)))
    offset = draw(st.integers(0, tensor.nbytes - 1))
    length = draw(st.integers(1, tensor.nbytes - offset))
    flag = draw(st.integers(0, 1))
    data = bytearray(weight_bytes(tensor, offset, length))
    if kind == "match":
        expected = reference(tensor.name, offset, tensor.file_offset + offset, length, DIGEST, flag)
        return set_tensor(tensor.name, offset, bytes(data), flag), expected, length, 0
    data[draw(st.integers(0, length - 1))] ^= draw(st.integers(1, 255))
    original = set_tensor(tensor.name, offset, bytes(data), flag)
    return original, original, 0, length


piece_sizes = st.lists(st.integers(1, 700), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(st.lists(traffic(), max_size=8), piece_sizes, piece_sizes)
def test_any_traffic_in_any_pieces_round_trips_and_adds_up(requests, host_sizes, member_sizes):
    stream = b"".join(original for original, _, _, _ in requests)
    referencer, expander = host(), member()

    sent = b"".join(run(referencer, chop(stream, host_sizes)))
    delivered = b"".join(run(expander, chop(sent, member_sizes)))

    assert sent == b"".join(expected for _, expected, _, _ in requests)
    assert delivered == stream
    counts = referencer.counts
    references = sum(1 for _, _, referenced, _ in requests if referenced)
    assert counts.weights_referenced_bytes == sum(referenced for _, _, referenced, _ in requests)
    assert counts.weights_sent_bytes == sum(weight_sent for _, _, _, weight_sent in requests)
    assert len(sent) == counts.other_bytes + counts.weights_sent_bytes + references * (9 + 353)
    assert expander.counts.weights_referenced_bytes == counts.weights_referenced_bytes
    assert len(delivered) == expander.counts.other_bytes + expander.counts.weights_referenced_bytes


# --- refusals ----------------------------------------------------------------------------------------

VALID_REFERENCE = reference("token_embd.weight", 0, EMBD.file_offset, EMBD.nbytes, DIGEST)
OTHER_DIGEST = hashlib.sha256(b"another model").hexdigest()


@pytest.mark.parametrize("machine", [host, member])
@pytest.mark.parametrize("stream, complaint", [
    (message(18), "unknown RPC command 18|command 18 is not a request"),
    (message(0x7F, b"x"), "unknown RPC command 127|command 127 is not a request"),
    (struct.pack("<BQ", GRAPH_COMPUTE, MAX_MESSAGE_BYTES + 1), "over"),
    (struct.pack("<BQ", SET_TENSOR, 2**64 - 1), "over"),
])
def test_streams_that_are_not_llama_rpc_are_refused(machine, stream, complaint):
    with pytest.raises(RpcStreamError, match=complaint):
        run(machine(), chop(stream, [1]))


def test_the_largest_allowed_size_is_accepted():
    header = struct.pack("<BQ", GRAPH_COMPUTE, MAX_MESSAGE_BYTES)
    assert b"".join(host().feed(header)) == header


def test_a_reference_from_llama_cpp_is_refused_by_the_host():
    with pytest.raises(RpcStreamError, match="REFERENCE came from llama.cpp"):
        host().feed(VALID_REFERENCE)


@pytest.mark.parametrize("stream, complaint", [
    (reference("token_embd.weight", 0, EMBD.file_offset, 10, OTHER_DIGEST), "unknown file"),
    (VALID_REFERENCE[:9 + 10].replace(struct.pack("<Q", 353), struct.pack("<Q", 10)), "reference of 10 bytes"),
    (message(REFERENCE, VALID_REFERENCE[9:-1]), "reference of 352 bytes"),
    (message(REFERENCE, VALID_REFERENCE[9:] + b"\0"), "reference of 354 bytes"),
    (reference("token_embd.weight", 0, EMBD.file_offset, 0, DIGEST), "0 data bytes"),
    (reference("token_embd.weight", 0, 0, MAX_MESSAGE_BYTES, DIGEST), "data bytes"),
    (reference("token_embd.weight", 0, len(GGUF) - 5, 10, DIGEST), "not token_embd.weight's data"),
    (reference("token_embd.weight", 0, 2**64 - 1, 10, DIGEST), "not token_embd.weight's data"),
    (reference("inp_embd", 0, EMBD.file_offset, 10, DIGEST), "tensor 'inp_embd', which file"),
    (reference("token_embd.weight", 1, EMBD.file_offset + 1, EMBD.nbytes, DIGEST), "lies outside"),
    (reference("token_embd.weight", 2**64 - 1, EMBD.file_offset, 1, DIGEST), "lies outside"),
])
def test_invalid_references_are_refused_by_the_member(stream, complaint):
    with pytest.raises(RpcStreamError, match=complaint):
        run(member(), chop(stream, [7]))


def test_a_member_file_shorter_than_its_index_says_stops_the_stream():
    tensors = {"tail": WeightTensor("tail", len(GGUF) - 5, 10)}
    with pytest.raises(RpcStreamError, match="gave 5 bytes"):
        run(member(tensors=tensors), [reference("tail", 0, len(GGUF) - 5, 10, DIGEST)])


@pytest.mark.parametrize("machine, stream", [(host, message(99)), (member, message(REFERENCE))])
def test_after_an_error_the_stream_stays_failed(machine, stream):
    failed = machine()
    with pytest.raises(RpcStreamError):
        failed.feed(stream)
    with pytest.raises(RpcStreamError, match="already failed"):
        failed.feed(message(HELLO))


def test_errors_are_one_line():
    with pytest.raises(RpcStreamError) as raised:
        member().feed(reference("x\ny", 0, 0, 1, OTHER_DIGEST))
    assert "\n" not in str(raised.value)


# --- whatever arrives, only lists of bytes or RpcStreamError ----------------------------------------

@st.composite
def small_messages(draw):
    """Messages with any command byte and a payload that fits its declared size or nearly does."""
    command = draw(st.sampled_from([SET_TENSOR, REFERENCE, GRAPH_COMPUTE, 18, 255]) | st.integers(0, 255))
    payload = draw(st.binary(max_size=400) | st.just(VALID_REFERENCE[9:]) | st.just(set_tensor(
        "token_embd.weight", 0, weight_bytes(EMBD, 0, 30))[9:]))
    size = draw(st.just(len(payload)) | st.integers(0, 2**64 - 1))
    return struct.pack("<BQ", command, size) + payload


def survives(machine, stream: bytes, sizes) -> None:
    try:
        run(machine, chop(stream, sizes))
    except RpcStreamError as error:
        assert "\n" not in str(error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), piece_sizes)
def test_arbitrary_bytes_raise_only_rpc_stream_errors(stream, sizes):
    survives(host(), stream, sizes)
    survives(member(), stream, sizes)


@settings(max_examples=300, deadline=None)
@given(st.lists(small_messages(), max_size=6), piece_sizes)
def test_arbitrary_messages_raise_only_rpc_stream_errors(messages, sizes):
    stream = b"".join(messages)
    survives(host(), stream, sizes)
    survives(member(), stream, sizes)
