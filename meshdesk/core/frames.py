"""Control-message framing, sans-IO: a 4-byte big-endian length, then compact UTF-8 JSON.

Every message is a JSON object with a non-empty string "type". Whatever a peer sends, the
decoder either returns such dicts or raises FrameError; it never buffers more than one
frame's declared size, and it refuses a too-large declared size before reading the body.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, Mapping

from meshdesk.core.errors import PeerProtocolError

MAX_FRAME_BYTES = 1 << 20
_LENGTH = struct.Struct(">I")
# Lone surrogates survive json.loads as unencodable str; only text with a surrogate escape can hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class FrameError(PeerProtocolError):
    """The peer sent something malformed; str() is one line."""


def encode_frame(message: Mapping, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One frame for `message`; ValueError means our own message is wrong (no type, NaN, too large)."""
    if not _has_type(message):
        raise ValueError(f"a control message needs a non-empty str 'type', got {_type_of(message)}")
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(body) > max_frame_bytes:
        raise ValueError(f"{message['type']} message is {len(body)} bytes, over the {max_frame_bytes}-byte frame limit")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Turns a byte stream, in pieces of any size, into control messages.

    After the first FrameError the decoder stays failed: the stream has lost its framing, and
    the peer is to be dropped. Messages completed in the same feed as the error are dropped too.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES):
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._failure: FrameError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict]:
        if self._failure is not None:
            raise FrameError(f"stream already failed: {self._failure}")
        self._buffer += data
        try:
            return self._complete_messages()
        except FrameError as error:
            self._failure = error
            self._buffer.clear()
            raise

    def _complete_messages(self) -> list[dict]:
        messages = []
        while (body := self._next_body()) is not None:
            messages.append(decode_body(body))
        return messages

    def _next_body(self) -> bytes | None:
        if len(self._buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self._max_frame_bytes:
            raise FrameError(f"frame of {length} bytes is over the {self._max_frame_bytes}-byte limit")
        end = _LENGTH.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[_LENGTH.size:end])
        del self._buffer[:end]
        return body


def decode_body(body: bytes) -> dict:
    """The message in one frame's body, or FrameError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FrameError(f"frame is not valid UTF-8 (byte {error.start})") from None
    message = _parse_json(text)
    if not isinstance(message, dict):
        raise FrameError(f"frame holds a JSON {type(message).__name__}, not an object")
    if not _has_type(message):
        raise FrameError(f"message has no non-empty string 'type' (got {_type_of(message)})")
    if _SURROGATE_ESCAPE.search(text):
        _reject_lone_surrogates(message)
    return message


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_object_without_duplicates)
    except FrameError:
        raise
    except json.JSONDecodeError as error:
        raise FrameError(f"frame is not valid JSON: {error.msg} at character {error.pos}") from None
    except RecursionError:
        raise FrameError("frame JSON is nested too deeply") from None
    except ValueError as error:  # e.g. an integer with more digits than int() accepts
        raise FrameError(f"frame JSON has an unreadable value: {error}") from None


def _reject_constant(name: str) -> Any:
    raise FrameError(f"frame JSON contains {name}, which is not a number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise FrameError(f"frame JSON number {text[:40]} is out of range")
    return number


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    # Two readers could pick different values for a repeated key; refuse the ambiguity.
    message = dict(pairs)
    if len(message) != len(pairs):
        raise FrameError("frame JSON repeats a key in one object")
    return message


def _reject_lone_surrogates(message: dict) -> None:
    try:
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("frame JSON contains a lone surrogate escape") from None


def _has_type(message: object) -> bool:
    return isinstance(message, Mapping) and isinstance(message.get("type"), str) and bool(message["type"])


def _type_of(message: object) -> str:
    if not isinstance(message, Mapping):
        return type(message).__name__
    return repr(message.get("type"))[:40]
