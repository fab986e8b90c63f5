"""The mesh data plane: TLS 1.3 over TCP (the standard library's ssl), on the QUIC port's number.

aioquic is pure Python and moves a few MiB/s; asyncio TLS over TCP moves hundreds. So bulk
bytes (the llama.cpp RPC tunnel, model files) go here. A connection starts with the same
framed mesh handshake as QUIC. Once both sides are authenticated, `detach()` hands over the
raw byte stream.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from meshdesk.core.frames import FrameDecoder, FrameError, encode_frame
from meshdesk.node.interfaces import LinkClosed

log = logging.getLogger(__name__)

READ_CHUNK = 65536
# DER prefix of an Ed25519 SubjectPublicKeyInfo: SEQUENCE, AlgorithmIdentifier 1.3.101.112, BIT STRING.
ED25519_KEY_PREFIX = bytes.fromhex("302a300506032b6570032100")
HANDSHAKE_TIMEOUT = 10.0

OnLink = Callable[["TlsLink"], Awaitable[None]]


def ed25519_key_in_certificate(der: bytes | None) -> bytes | None:
    if not der:
        return None
    start = der.find(ED25519_KEY_PREFIX)
    if start < 0 or len(der) < start + len(ED25519_KEY_PREFIX) + 32:
        return None
    start += len(ED25519_KEY_PREFIX)
    return der[start:start + 32]


class TlsLink:
    """A TLS connection carrying framed messages until `detach()` turns it into a byte stream."""

    plane = "tls"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 server_public_key: bytes | None):
        self.reader = reader
        self.writer = writer
        self.server_public_key = server_public_key
        self.decoder = FrameDecoder()
        self.pending: list[dict] = []
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.remote_address = (peer[0], peer[1])

    async def send(self, message: dict) -> None:
        try:
            self.writer.write(encode_frame(message))
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as error:
            raise LinkClosed(str(error)) from None

    async def receive(self) -> dict:
        while not self.pending:
            try:
                data = await self.reader.read(READ_CHUNK)
            except (ConnectionError, ssl.SSLError) as error:
                raise LinkClosed(str(error)) from None
            if not data:
                raise LinkClosed("connection closed")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def detach(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The raw stream, for a tunnel; no frames may be left unread."""
        if self.pending or self.decoder.buffered:
            raise FrameError("the peer sent data before the stream was handed over")
        return self.reader, self.writer

    def close(self, reason: str = "") -> None:
        self.writer.close()

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()


def server_context(certificate_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certificate_file, key_file)
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # peers pin node keys in the mesh handshake instead
    return context


class TlsTransport:
    def __init__(self, certificate_file: Path, key_file: Path, own_public_key: bytes):
        self.server_ssl = server_context(certificate_file, key_file)
        self.client_ssl = client_context()
        self.own_public_key = own_public_key
        self.server: asyncio.Server | None = None
        self.on_link: OnLink | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, on_link: OnLink) -> int:
        self.on_link = on_link
        self.server = await asyncio.start_server(self._accepted, host, port, ssl=self.server_ssl,
                                                 ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        return self.server.sockets[0].getsockname()[1]

    async def _accepted(self, reader, writer) -> None:
        link = TlsLink(reader, writer, self.own_public_key)
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self.on_link(link)
        except (LinkClosed, FrameError, ConnectionError, ssl.SSLError) as error:
            log.info("tls link from %s ended: %s", link.remote_address, error)
            writer.close()
        except asyncio.CancelledError:
            writer.close()  # our own shutdown; asyncio's stream callback must not see it
        finally:
            self.tasks.discard(task)

    async def connect(self, address: tuple[str, int], timeout: float = 5.0) -> TlsLink:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address[0], address[1], ssl=self.client_ssl,
                                    server_hostname=None), timeout)
        certificate = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return TlsLink(reader, writer, ed25519_key_in_certificate(certificate))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
