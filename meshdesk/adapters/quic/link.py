"""A QUIC connection's control stream as a link that carries whole messages, and the data
streams the node may open and accept on its connection (`adapters.quic.transport` makes them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from meshdesk.adapters.quic.streams import DATA_STREAM, QuicStreamLink
from meshdesk.core.frames import FrameDecoder, encode_frame
from meshdesk.core.preauth import PRE_AUTH_FRAME_BYTES
from meshdesk.node.interfaces import LinkClosed

CONTROL_STREAM = b"\x01"
READ_CHUNK = 65536

OnStream = Callable[[QuicStreamLink], Awaitable[None]]


class QuicLink:
    """A control stream to one peer: send and receive whole messages."""

    plane = "quic"

    def __init__(self, protocol: "MeshQuicProtocol", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, server_public_key: bytes | None):
        self.protocol = protocol
        self.reader = reader
        self.writer = writer
        self.server_public_key = server_public_key
        self.client_public_key = None  # QUIC links carry no client certificate
        accepted = protocol.ticket is not None
        self.decoder = FrameDecoder(PRE_AUTH_FRAME_BYTES) if accepted else FrameDecoder()
        self.pending: list[dict] = []
        self.remote_address = protocol.remote_address()

    def authenticated(self) -> None:
        """The peer proved itself: full-size frames, and its place among the waiting is free."""
        if self.protocol.ticket is not None:
            self.protocol.ticket.release()
            self.protocol.ticket = None
            if not self.decoder.buffered:
                self.decoder = FrameDecoder()

    async def send(self, message: dict) -> None:
        if self.protocol.closed.is_set():
            raise LinkClosed("connection closed")
        self.writer.write(encode_frame(message))

    async def receive(self) -> dict:
        while not self.pending:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                raise LinkClosed(self.protocol.close_reason or "connection closed")
            self.pending.extend(self.decoder.feed(data))  # FrameError: the caller drops the peer
        return self.pending.pop(0)

    def close(self, reason: str = "") -> None:
        self.protocol.close(reason_phrase=reason[:100])

    @property
    def closed(self) -> bool:
        return self.protocol.closed.is_set()

    def accept_streams(self, on_stream: OnStream) -> None:
        """The node accepted this link: data streams the peer opens go to `on_stream`, those
        it opened before we were done with the handshake too (its side finished first)."""
        self.protocol.on_data_stream = on_stream
        early, self.protocol.early_streams = self.protocol.early_streams, []
        for stream in early:
            self.protocol.start_task(on_stream(stream))

    async def open_stream(self) -> QuicStreamLink:
        """A data stream on this connection (the peer must have accepted our control link)."""
        if self.protocol.closed.is_set():
            raise LinkClosed(self.protocol.close_reason or "connection closed")
        reader, writer = await self.protocol.create_stream()
        writer.write(DATA_STREAM)
        return QuicStreamLink(self.protocol, reader, writer, self.server_public_key)
