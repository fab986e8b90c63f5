"""Control-message framing: reassembly from any chunking, and refusal of whatever a peer gets wrong."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.core.frames import MAX_FRAME_BYTES, FrameDecoder, FrameError, encode_frame

MESSAGES = [
    {"type": "hello", "node": "a1b2c3", "version": 1},
    {"type": "gossip", "records": [{"id": "n1", "capacity": 8.5e9, "models": ["gemma"]}], "empty": {}},
    {"type": "note", "text": "héllo, wörld ✓ 😀", "nothing": None, "flags": [True, False]},
    {"type": "x"},
]


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def stream() -> bytes:
    return b"".join(encode_frame(message) for message in MESSAGES)


def feed_in_pieces(data: bytes, sizes) -> list[dict]:
    decoder = FrameDecoder()
    messages, offset = [], 0
    for size in sizes:
        messages += decoder.feed(data[offset:offset + size])
        offset += size
    messages += decoder.feed(data[offset:])
    assert decoder.buffered == 0
    return messages


def refusal(*pieces: bytes, max_frame_bytes: int = MAX_FRAME_BYTES) -> tuple[str, FrameDecoder]:
    decoder = FrameDecoder(max_frame_bytes)
    with pytest.raises(FrameError) as caught:
        for piece in pieces:
            decoder.feed(piece)
    assert "\n" not in str(caught.value)
    return str(caught.value), decoder


# ---------------------------------------------------------------- encoding


def test_encode_frame_is_a_length_then_compact_utf8_json():
    encoded = encode_frame({"type": "note", "text": "ü", "n": [1, 2]})
    body = '{"type":"note","text":"ü","n":[1,2]}'.encode("utf-8")
    assert encoded == struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("message, problem", [
    ({"kind": "hello"}, "needs a non-empty str 'type'"),
    ({"type": 3}, "needs a non-empty str 'type'"),
    ({"type": ""}, "needs a non-empty str 'type'"),
    (["type", "hello"], "needs a non-empty str 'type'"),
    ({"type": "x", "value": float("nan")}, "Out of range float"),
    ({"type": "blob", "data": "a" * MAX_FRAME_BYTES}, "over the 1048576-byte frame limit"),
])
def test_encoding_a_bad_message_is_our_bug(message, problem):
    with pytest.raises(ValueError, match=problem) as caught:
        encode_frame(message)
    assert not isinstance(caught.value, FrameError)


def test_a_message_exactly_at_the_limit_is_encoded_and_decoded():
    padding = MAX_FRAME_BYTES - len(encode_frame({"type": "blob", "data": ""})) + 4
    message = {"type": "blob", "data": "a" * padding}
    assert len(encode_frame(message)) == 4 + MAX_FRAME_BYTES
    assert FrameDecoder().feed(encode_frame(message)) == [message]


# ---------------------------------------------------------------- reassembly


def test_whole_stream_decodes_to_the_messages():
    assert FrameDecoder().feed(stream()) == MESSAGES


def test_one_byte_pieces_give_the_same_messages():
    decoder = FrameDecoder()
    messages = []
    for index in range(len(stream())):
        messages += decoder.feed(stream()[index:index + 1])
    assert messages == MESSAGES
    assert decoder.buffered == 0


def test_partial_frames_are_buffered_until_complete():
    decoder = FrameDecoder()
    first = encode_frame(MESSAGES[0])
    assert decoder.feed(first[:2]) == [] and decoder.buffered == 2
    assert decoder.feed(first[2:-1]) == [] and decoder.buffered == len(first) - 1
    assert decoder.feed(first[-1:] + first[:5]) == [MESSAGES[0]] and decoder.buffered == 5
    assert decoder.feed(b"") == []


@given(st.lists(st.integers(min_value=0, max_value=64), max_size=40))
def test_random_piece_sizes_give_the_same_messages(sizes):
    assert feed_in_pieces(stream(), sizes) == MESSAGES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
messages = st.builds(lambda kind, rest: {**rest, "type": kind},
                     st.text(min_size=1), st.dictionaries(st.text(), json_values, max_size=4))


@given(st.lists(messages, max_size=5), st.lists(st.integers(min_value=1, max_value=16), max_size=30))
def test_any_encodable_messages_survive_any_chunking(sent, sizes):
    data = b"".join(encode_frame(message) for message in sent)
    assert feed_in_pieces(data, sizes) == sent


# ---------------------------------------------------------------- refusal


def test_an_oversized_declared_length_fails_without_waiting_for_the_body():
    message, decoder = refusal(struct.pack(">I", 101), max_frame_bytes=100)
    assert message == "frame of 101 bytes is over the 100-byte limit"
    assert decoder.buffered == 0


def test_an_oversized_declared_length_fails_even_with_the_header_split():
    message, decoder = refusal(b"\xff\xff", b"\xff", b"\xff" + b"x" * 1000)
    assert message == f"frame of {2**32 - 1} bytes is over the {MAX_FRAME_BYTES}-byte limit"
    assert decoder.buffered == 0


def test_a_failed_decoder_stays_failed():
    _, decoder = refusal(frame(b"[]"))
    with pytest.raises(FrameError, match="stream already failed: frame holds a JSON list"):
        decoder.feed(encode_frame(MESSAGES[0]))
    assert decoder.buffered == 0


def test_good_messages_before_a_bad_frame_in_earlier_feeds_are_delivered():
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(MESSAGES[0])) == [MESSAGES[0]]
    with pytest.raises(FrameError):
        decoder.feed(frame(b"nope"))


@pytest.mark.parametrize("body, problem", [
    (b"", "frame is not valid JSON: Expecting value at character 0"),
    (b'{"type": "a"', "frame is not valid JSON"),
    (b'{"type": "a"} x', "frame is not valid JSON: Extra data"),
    (b'{"type": "\xff"}', "frame is not valid UTF-8 (byte 10)"),
    (b'{"type": "a", "v": NaN}', "frame JSON contains NaN, which is not a number"),
    (b'{"type": "a", "v": -Infinity}', "frame JSON contains -Infinity, which is not a number"),
    (b'{"type": "a", "v": 1e999}', "frame JSON number 1e999 is out of range"),
    (b'{"type": "a", "v": ' + b"9" * 5000 + b"}", "frame JSON has an unreadable value"),
    (b"[" * 100_000 + b"]" * 100_000, "frame JSON is nested too deeply"),
    (b'{"type": "a", "type": "b"}', "frame JSON repeats a key in one object"),
    (b'{"type": "a", "v": "\\ud800"}', "frame JSON contains a lone surrogate escape"),
    (b'"hello"', "frame holds a JSON str, not an object"),
    (b"[]", "frame holds a JSON list, not an object"),
    (b"{}", "message has no non-empty string 'type' (got None)"),
    (b'{"type": 7}', "message has no non-empty string 'type' (got 7)"),
    (b'{"type": ""}', "message has no non-empty string 'type' (got '')"),
])
def test_a_malformed_frame_is_a_one_line_frame_error(body, problem):
    message, decoder = refusal(frame(body))
    assert message.startswith(problem)
    assert decoder.buffered == 0


def test_surrogate_pairs_are_fine_only_lone_surrogates_are_refused():
    body = b'{"type": "a", "v": "\\ud83d\\ude00"}'
    assert FrameDecoder().feed(frame(body)) == [{"type": "a", "v": "😀"}]


@given(st.binary(max_size=200) | st.binary(max_size=200).map(frame), st.lists(st.integers(min_value=1, max_value=32), max_size=10))
def test_arbitrary_bytes_give_only_messages_or_frame_errors(data, sizes):
    decoder = FrameDecoder(max_frame_bytes=1000)
    try:
        messages = feed_in_pieces_raw(decoder, data, sizes)
    except FrameError as error:
        assert str(error) and "\n" not in str(error)
        return
    for message in messages:
        assert isinstance(message, dict) and isinstance(message["type"], str)
        json.dumps(message, allow_nan=False).encode("utf-8")


@given(st.dictionaries(st.text(), json_values, max_size=4), st.binary(max_size=40))
def test_json_bodies_give_only_messages_or_frame_errors(value, noise):
    body = json.dumps(value).encode() + noise
    try:
        messages = FrameDecoder().feed(frame(body))
    except FrameError:
        return
    assert messages == [value] and isinstance(value.get("type"), str)


def feed_in_pieces_raw(decoder: FrameDecoder, data: bytes, sizes) -> list[dict]:
    messages, offset = [], 0
    for size in sizes:
        messages += decoder.feed(data[offset:offset + size])
        offset += size
    return messages + decoder.feed(data[offset:])
