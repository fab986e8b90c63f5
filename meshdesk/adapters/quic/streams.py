"""Data streams over a QUIC connection whose control link is authenticated.

When no TCP path reaches a member (it is behind a NAT, and the link to it was punched or
dialled from its side), the data plane runs on streams of the control link's own connection.
A stream starts with the DATA_STREAM kind byte; what follows is the same as on a TLS data
link: framed messages, then, after `detach()`, raw bytes. The connection is already bound to
the member's node key by the control link's handshake, so a stream needs no handshake of its
own: whoever can send on the connection is that member.

aioquic's stream writer never pushes back (`drain()` returns at once and every byte waits in
the stream's send buffer), so a tunnel pushing a model's layers would hold them all in memory.
`BoundedStreamWriter.drain()` waits while more than SEND_BUFFER_BYTES are unacknowledged.
"""

from __future__ import annotations

import asyncio

from meshdesk.core.frames import FrameDecoder, FrameError, encode_frame
from meshdesk.node.interfaces import LinkClosed

DATA_STREAM = b"\x02"
READ_CHUNK = 65536
SEND_BUFFER_BYTES = 1 << 20


class BoundedStreamWriter:
    """An asyncio.StreamWriter's part that tunnels use, with a drain that waits for acks."""

    def __init__(self, protocol, writer: asyncio.StreamWriter):
        self.protocol = protocol
        self.writer = writer
        self.stream_id = writer.get_extra_info("stream_id")

    def write(self, data: bytes) -> None:
        if self.protocol.closed.is_set():
            raise ConnectionResetError(self.protocol.close_reason or "connection closed")
        try:
            self.writer.write(data)
        except (RuntimeError, ValueError) as error:  # aioquic: the peer stopped the stream, or it ended
            raise ConnectionResetError(f"stream closed: {error}") from None

    def unacknowledged(self) -> int:
        stream = self.protocol._quic._streams.get(self.stream_id)
        return 0 if stream is None else len(stream.sender._buffer)

    async def drain(self) -> None:
        while self.unacknowledged() > SEND_BUFFER_BYTES:
            if self.protocol.closed.is_set():
                raise ConnectionResetError(self.protocol.close_reason or "connection closed")
            await self.protocol.progress()

    def close(self) -> None:
        """Our half ends, and the peer is told to stop sending: what it sends after is dropped
        unread (`MeshQuicProtocol.discard_stream`), not kept in memory for nobody."""
        if self.protocol.closed.is_set():
            return
        try:
            self.writer.close()
        except (RuntimeError, ValueError):
            pass  # the stream had ended already
        self.protocol.discard_stream(self.stream_id)

    def is_closing(self) -> bool:
        return self.protocol.closed.is_set() or self.writer.is_closing()

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default=None):
        return self.writer.get_extra_info(name, default)


class QuicStreamLink:
    """One data stream: framed messages until `detach()` hands over the raw bytes."""

    plane = "quic"
    client_public_key = None

    def __init__(self, protocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 server_public_key: bytes | None):
        self.protocol = protocol
        self.reader = reader
        self.writer = BoundedStreamWriter(protocol, writer)
        self.server_public_key = server_public_key
        self.decoder = FrameDecoder()
        self.pending: list[dict] = []
        self.remote_address = protocol.remote_address()

    def authenticated(self) -> None:
        """Nothing to lift: only an authenticated connection accepts data streams."""

    async def send(self, message: dict) -> None:
        try:
            self.writer.write(encode_frame(message))
            await self.writer.drain()
        except ConnectionError as error:
            raise LinkClosed(str(error)) from None

    async def receive(self) -> dict:
        while not self.pending:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                raise LinkClosed(self.protocol.close_reason or "stream closed")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def detach(self) -> tuple[asyncio.StreamReader, BoundedStreamWriter]:
        """The raw stream, for a tunnel; no frames may be left unread."""
        if self.pending or self.decoder.buffered:
            raise FrameError("the peer sent data before the stream was handed over")
        return self.reader, self.writer

    def close(self, reason: str = "") -> None:
        self.writer.close()

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()
