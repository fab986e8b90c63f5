"""Reading a GGUF header: bounds-checked little-endian fields over a mapped file, and the
one-line errors a bad file is reported with."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

# Real keys, tensor names and the few strings we decode are short; bounding them keeps a
# corrupt length from making us copy gigabytes of a mapped file into memory.
MAX_DECODED_STRING_BYTES = 1 << 16

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")


class ModelFileError(Exception):
    """A model file that cannot be used; str(error) is one clear human line."""


@dataclass(frozen=True)
class StoredString:
    """Where a string value lies in the file; decoded only if MeshDesk needs it."""

    start: int
    length: int


class Cursor:
    """Reads little-endian GGUF fields from a mapped file, never past its end."""

    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self.size = len(buffer)
        self.position = 0

    def unpack(self, layout: struct.Struct, what: str):
        if self.position + layout.size > self.size:
            raise ModelFileError(
                f"model file is truncated: {shown(self.path)} ends at byte {self.size}, "
                f"inside the GGUF header, while reading {one_line(what)}"
            )
        value = layout.unpack_from(self.buffer, self.position)[0]
        self.position += layout.size
        return value

    def u32(self, what: str) -> int:
        return self.unpack(U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(U64, what)

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

    def string(self, what: str) -> StoredString:
        length = self.u64(f"the length of {what}")
        start = self.position
        self.skip(length, what)
        return StoredString(start, length)

    def text(self, what: str) -> str:
        return self.decode(self.string(what), what)

    def decode(self, stored: StoredString, what: str) -> str:
        if stored.length > MAX_DECODED_STRING_BYTES:
            raise self.corrupt(
                f"{what} at byte {stored.start} is {stored.length} bytes long, more than {MAX_DECODED_STRING_BYTES}"
            )
        try:
            return self.buffer[stored.start : stored.start + stored.length].decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt(f"{what} at byte {stored.start} is not valid UTF-8") from None

    def corrupt(self, problem: str) -> ModelFileError:
        return corrupt_header(self.path, problem)

    def overrun(self, problem: str) -> ModelFileError:
        # a cut-off download and a garbage length look the same from here
        path = shown(self.path)
        return ModelFileError(f"corrupt or truncated GGUF header in {path}: {one_line(problem)}")


def corrupt_header(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(f"corrupt GGUF header in {shown(path)}: {one_line(problem)}")


def shown(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def one_line(text: str) -> str:
    return text if text.isprintable() else repr(text)[1:-1]
