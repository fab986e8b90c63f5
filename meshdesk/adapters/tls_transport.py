"""The mesh data plane: mutual TLS 1.3 over TCP (the standard library's ssl), on the QUIC port's number.

aioquic is pure Python and moves a few MiB/s; asyncio TLS over TCP moves hundreds. So bulk
bytes (the llama.cpp RPC tunnel, model files) go here. A connection starts with the same
framed mesh handshake as QUIC. Once both sides are authenticated, `detach()` hands over the
raw byte stream.

Both ends present their node certificate. The ssl module verifies a chain or nothing, so node
certificates are issued under a public issuer (adapters/node_keys.py) that the acceptor
trusts; who the peer is comes from the Ed25519 key parsed out of its certificate, which the
mesh handshake pins to the node key in the hello and binds into its transcript.

Before a peer has authenticated it gets little: a place among PreAuthGate's few per address,
frames of PRE_AUTH_FRAME_BYTES at most, and PRE_AUTH_SECONDS for TLS and the mesh handshake
together. The private key is loaded from memory (a memfd on Linux), never from a lasting file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from meshdesk.core.frames import FrameDecoder, FrameError, encode_frame
from meshdesk.core.preauth import PRE_AUTH_FRAME_BYTES, PRE_AUTH_SECONDS, PreAuthGate, Ticket
from meshdesk.node.interfaces import LinkClosed

log = logging.getLogger(__name__)

READ_CHUNK = 65536

OnLink = Callable[["TlsLink"], Awaitable[None]]


def ed25519_key_in_certificate(der: bytes | None) -> bytes | None:
    """The raw Ed25519 key of a DER certificate's SubjectPublicKeyInfo; None for anything else."""
    if not der:
        return None
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class TlsLink:
    """A TLS connection carrying framed messages until `detach()` turns it into a byte stream."""

    plane = "tls"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 server_public_key: bytes | None, client_public_key: bytes | None,
                 ticket: Ticket | None = None):
        self.reader = reader
        self.writer = writer
        self.server_public_key = server_public_key
        self.client_public_key = client_public_key
        self.ticket = ticket  # an accepted link's place among the unauthenticated
        self.decoder = FrameDecoder(PRE_AUTH_FRAME_BYTES) if ticket is not None else FrameDecoder()
        self.pending: list[dict] = []
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.remote_address = (peer[0], peer[1])

    def authenticated(self) -> None:
        """The peer proved itself: it may send full-size frames and no longer holds a place."""
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None
            if not self.decoder.buffered:
                self.decoder = FrameDecoder()

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


def load_chain(context: ssl.SSLContext, certificate_pem: bytes, key_pem: bytes) -> None:
    """Loads a certificate and its private key without leaving the key in a file.

    ssl wants a path: on Linux an anonymous memory file (memfd), read through /proc; elsewhere a
    file in a fresh 0700 folder, removed as soon as it is read."""
    chain = certificate_pem + key_pem
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        descriptor = os.memfd_create("meshdesk-tls", os.MFD_CLOEXEC)
        try:
            view = memoryview(chain)
            while view:
                view = view[os.write(descriptor, view):]
            context.load_cert_chain(f"/proc/self/fd/{descriptor}")
        finally:
            os.close(descriptor)
        return
    folder = tempfile.mkdtemp(prefix="meshdesk-tls-")  # mode 0700
    try:
        path = os.path.join(folder, "chain.pem")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(chain)
        context.load_cert_chain(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def server_context(certificate_pem: bytes, key_pem: bytes, issuer_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    load_chain(context, certificate_pem, key_pem)
    context.verify_mode = ssl.CERT_REQUIRED  # a client certificate, under the public issuer
    context.load_verify_locations(cadata=issuer_pem.decode())
    return context


def client_context(certificate_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # peers pin node keys in the mesh handshake instead
    load_chain(context, certificate_pem, key_pem)
    return context


class TlsTransport:
    def __init__(self, certificate_pem: bytes, key_pem: bytes, own_public_key: bytes,
                 issuer_pem: bytes, gate: PreAuthGate | None = None):
        self.server_ssl = server_context(certificate_pem, key_pem, issuer_pem)
        self.client_ssl = client_context(certificate_pem, key_pem)
        self.own_public_key = own_public_key
        self.gate = gate or PreAuthGate()
        self.server: asyncio.Server | None = None
        self.on_link: OnLink | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, on_link: OnLink) -> int:
        self.on_link = on_link
        # Plain TCP first: a connection gets its place (or is dropped) before any TLS work.
        self.server = await asyncio.start_server(self._accepted, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def _accepted(self, reader, writer) -> None:
        host = (writer.get_extra_info("peername") or ("?",))[0]
        ticket = self.gate.enter(host)
        if ticket is None:
            log.info("tls: too many unauthenticated connections (from %s); dropped one", host)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self.tasks.add(task)
        expiry = asyncio.get_running_loop().call_later(PRE_AUTH_SECONDS, self._expire, ticket, writer)
        link = None
        try:
            await writer.start_tls(self.server_ssl, ssl_handshake_timeout=PRE_AUTH_SECONDS)
            certificate = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            link = TlsLink(reader, writer, self.own_public_key, ed25519_key_in_certificate(certificate),
                           ticket)
            await self.on_link(link)
        except (LinkClosed, FrameError, ConnectionError, ssl.SSLError, TimeoutError) as error:
            log.info("tls link from %s ended: %s", host, error or type(error).__name__)
            writer.close()
        except asyncio.CancelledError:
            writer.close()  # our own shutdown; asyncio's stream callback must not see it
        finally:
            expiry.cancel()
            ticket.release()
            self.tasks.discard(task)

    @staticmethod
    def _expire(ticket: Ticket, writer: asyncio.StreamWriter) -> None:
        if not ticket.released:  # still not authenticated: cut it off
            writer.transport.abort()
            ticket.release()

    async def connect(self, address: tuple[str, int], timeout: float = 5.0) -> TlsLink:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address[0], address[1], ssl=self.client_ssl,
                                    server_hostname=None), timeout)
        certificate = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return TlsLink(reader, writer, ed25519_key_in_certificate(certificate), self.own_public_key)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
