"""The mesh control plane over QUIC (aioquic): one connection per peer pair, framed messages.

Each stream starts with a one-byte kind. Kind 1 is the control stream, which the dialling side
opens first. The handshake and then gossip travel on it as length-prefixed JSON frames. Kind 2
is a data stream (`adapters.quic.streams`), which either side may open once the node has
accepted the control link (`QuicLink.accept_streams`); before that, one closes the connection.
The peers' own node keys are the TLS keys (self-signed certificates), and the dialling side
reads the accepting side's key from the TLS handshake so the mesh handshake can be bound to it.

Dials leave from the mesh port's own socket (when it is bound to every address), so every peer
sees this node from one address: behind an endpoint-independent NAT, the public address and
port that a hole punch aims at (`punch` sends the datagrams that open the NAT's way in).

Before a peer has authenticated it gets little: a new connection from an address that already
has PreAuthGate's share waiting is dropped at its first packet, frames are capped at
PRE_AUTH_FRAME_BYTES, and the connection is closed after PRE_AUTH_SECONDS without a finished
mesh handshake (the QUIC handshake included).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from meshdesk.adapters.quic.link import CONTROL_STREAM, OnStream, QuicLink
from meshdesk.adapters.quic.streams import DATA_STREAM, QuicStreamLink
from meshdesk.core.frames import FrameError
from meshdesk.core.preauth import PRE_AUTH_SECONDS, PreAuthGate
from meshdesk.node.interfaces import LinkClosed

log = logging.getLogger(__name__)

ALPN = "meshdesk/1"
IDLE_TIMEOUT = 20.0
# What a hole punch sends: the fixed bit is clear, so no QUIC stack takes it for a packet (ours
# drops it unparsed); it only opens the sender's NAT towards the peer.
PUNCH_DATAGRAM = b"\x00meshdesk punch"
MAX_EARLY_STREAMS = 4
STOPPED = 0x100  # our application error code in STOP_SENDING: "done with this stream"

OnLink = Callable[[QuicLink], Awaitable[None]]


class MeshQuicProtocol(QuicConnectionProtocol):
    """One QUIC connection; hands its control stream to the transport as a QuicLink."""

    def __init__(self, *args, on_control_stream=None, ticket=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_control_stream = on_control_stream
        self.ticket = ticket  # an accepted connection's place among the unauthenticated
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.tasks: set[asyncio.Task] = set()
        self.on_data_stream: OnStream | None = None  # set once the control link is accepted
        self.early_streams: list[QuicStreamLink] = []  # data streams before that, held
        self.discarded: set[int] = set()  # streams we closed: what still arrives is dropped
        self.server_public_key: bytes | None = None  # the accepting side's key, for streams
        self._progress: list[asyncio.Future] = []
        if ticket is not None:
            self.expiry = asyncio.get_running_loop().call_later(PRE_AUTH_SECONDS, self._expire)

    def _expire(self) -> None:
        if self.ticket is not None:  # not authenticated in time: cut it off
            self.close(reason_phrase="handshake timed out")
            self._release()

    def _release(self) -> None:
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None

    def connection_lost(self, exc) -> None:
        """The socket is gone, so the connection can send nothing more: its timers stop. (One
        left armed fires later and writes to the closed socket: aioquic's `_handle_timer`
        traceback, `'NoneType' object has no attribute 'sendto'`.)"""
        self._release()
        for handle in (self._timer, self._transmit_task):
            if handle is not None:
                handle.cancel()
        self._timer = self._timer_at = self._transmit_task = None
        if not self.closed.is_set():
            self.close_reason = self.close_reason or "socket closed"
            self.closed.set()
            for reader in self._stream_readers.values():
                reader.feed_eof()
        super().connection_lost(exc)

    def abandon(self) -> None:
        """A dial given up: closed, and its handshake's waiter too, which nobody awaits now (on
        the mesh port's socket the connection lives on to time out, and would fail the waiter:
        asyncio's "Future exception was never retrieved")."""
        waiter, self._connected_waiter = self._connected_waiter, None
        if waiter is not None:
            waiter.cancel()
        self.close(reason_phrase="dial abandoned")

    def datagram_received(self, data, addr) -> None:
        super().datagram_received(data, addr)
        waiters, self._progress = self._progress, []
        for waiter in waiters:  # acks may have freed room in a stream's send buffer
            if not waiter.done():
                waiter.set_result(None)

    async def progress(self) -> None:
        """Returns when the next datagram arrives, or the connection ends."""
        waiter = asyncio.get_running_loop().create_future()
        self._progress.append(waiter)
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ConnectionTerminated):
            self.close_reason = event.reason_phrase or f"connection closed (code {event.error_code})"
            self.closed.set()
            self._release()
        if isinstance(event, events.StreamDataReceived) and event.stream_id in self.discarded:
            if event.end_stream:
                self.discarded.discard(event.stream_id)
            return
        if isinstance(event, events.StreamDataReceived) and event.stream_id not in self._stream_readers:
            if not self._accept_stream(event):
                return
        super().quic_event_received(event)

    def discard_stream(self, stream_id: int) -> None:
        """We are done with this stream: the peer is asked to stop sending on it (STOP_SENDING),
        and what it sent or still sends is dropped."""
        reader = self._stream_readers.pop(stream_id, None)
        if reader is None:
            return
        self.discarded.add(stream_id)
        try:
            self._quic.stop_stream(stream_id, STOPPED)
        except ValueError:
            pass  # aioquic forgot the stream: both halves had ended
        self._transmit_soon()

    def _accept_stream(self, event: events.StreamDataReceived) -> bool:
        """The peer's first stream on an accepted connection must be the control stream; later
        ones, data streams once the node accepted the control link. A data stream on a dialled
        connection before that is held (the acceptor finished the handshake first, and its
        node may already want a tunnel); a few at most. Anything else ends the connection."""
        if self.on_control_stream is not None and event.data.startswith(CONTROL_STREAM):
            handler, self.on_control_stream = self.on_control_stream, None
            reader, writer = self._opened(event)
            self.start_task(handler(self, reader, writer))
        elif self.on_data_stream is not None and event.data.startswith(DATA_STREAM):
            self.start_task(self.on_data_stream(QuicStreamLink(self, *self._opened(event), self.server_public_key)))
        elif self.ticket is None and self.on_control_stream is None and event.data.startswith(DATA_STREAM) \
                and len(self.early_streams) < MAX_EARLY_STREAMS:
            self.early_streams.append(QuicStreamLink(self, *self._opened(event), self.server_public_key))
        else:
            self.close(reason_phrase="unexpected stream")
        return False

    def _opened(self, event: events.StreamDataReceived) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = self._create_stream(event.stream_id)
        reader.feed_data(event.data[1:])
        if event.end_stream:
            reader.feed_eof()
        return reader, writer

    def start_task(self, work) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def remote_address(self) -> tuple[str, int]:
        address = self._quic._network_paths[0].addr if self._quic._network_paths else ("?", 0)
        host = address[0].removeprefix("::ffff:")
        return host, address[1]

    def peer_public_key(self) -> bytes | None:
        certificate = self._quic.tls._peer_certificate
        if certificate is None:
            return None
        try:
            return certificate.public_key().public_bytes_raw()
        except (AttributeError, ValueError):
            return None  # not an Ed25519 key: not a MeshDesk node


class GatedQuicServer(QuicServer):
    """A QuicServer that drops the first packet of a connection the gate has no room for."""

    def __init__(self, *args, gate: PreAuthGate, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.arriving_from: str | None = None

    def datagram_received(self, data, addr) -> None:
        host = addr[0].removeprefix("::ffff:")
        if self._opens_connection(data) and not self.gate.has_room(host):
            return
        self.arriving_from = host  # read by the protocol factory, within this call
        try:
            super().datagram_received(data, addr)
        finally:
            self.arriving_from = None

    def _opens_connection(self, data: bytes) -> bool:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._configuration.connection_id_length)
        except ValueError:
            return False
        return header.packet_type == QuicPacketType.INITIAL and header.destination_cid not in self._protocols

    def adopt(self, protocol: MeshQuicProtocol) -> None:
        """A connection we dial from this socket: its packets come here, and go to it."""
        protocol.connection_made(self._transport)
        protocol._connection_id_issued_handler = partial(self._connection_id_issued, protocol=protocol)
        protocol._connection_id_retired_handler = partial(self._connection_id_retired, protocol=protocol)
        protocol._connection_terminated_handler = partial(self._connection_terminated, protocol=protocol)
        self._protocols[protocol._quic.host_cid] = protocol

    def bound_to(self) -> tuple[str, int]:
        return self._transport.get_extra_info("sockname")[:2]


class QuicTransport:
    def __init__(self, certificate, private_key, own_public_key: bytes, gate: PreAuthGate | None = None):
        self.certificate = certificate
        self.private_key = private_key
        self.own_public_key = own_public_key
        self.gate = gate or PreAuthGate()
        self.server: GatedQuicServer | None = None
        self.clients: list[tuple[asyncio.DatagramTransport, MeshQuicProtocol]] = []
        self.on_link: OnLink | None = None

    def configuration(self, is_client: bool) -> QuicConfiguration:
        configuration = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                                          idle_timeout=IDLE_TIMEOUT, max_datagram_frame_size=None)
        configuration.certificate = self.certificate
        configuration.private_key = self.private_key
        if is_client:
            configuration.verify_mode = ssl.CERT_NONE  # peers pin node keys in the mesh handshake
        return configuration

    async def start(self, host: str, port: int, on_link: OnLink) -> int:
        self.on_link = on_link
        loop = asyncio.get_running_loop()
        configuration = self.configuration(is_client=False)
        transport, self.server = await loop.create_datagram_endpoint(
            # retry: a client proves its address (one round trip) before it costs us any state,
            # so packets with forged source addresses cannot take the gate's places.
            lambda: GatedQuicServer(configuration=configuration, create_protocol=self._server_protocol,
                                    retry=True, gate=self.gate),
            local_addr=(host, port),
        )
        return transport.get_extra_info("sockname")[1]

    def _server_protocol(self, *args, **kwargs) -> MeshQuicProtocol:
        ticket = self.gate.enter(self.server.arriving_from or "?")  # room was checked just before
        return MeshQuicProtocol(*args, on_control_stream=self._accepted, ticket=ticket, **kwargs)

    async def _accepted(self, protocol, reader, writer) -> None:
        protocol.server_public_key = self.own_public_key
        link = QuicLink(protocol, reader, writer, self.own_public_key)
        try:
            await self.on_link(link)
        except (LinkClosed, FrameError, ConnectionError) as error:
            log.info("quic link from %s ended: %s", link.remote_address, error)
            link.close("protocol error")

    async def connect(self, address: tuple[str, int], timeout: float = 5.0) -> QuicLink:
        host, port = address
        connection = QuicConnection(configuration=self.configuration(is_client=True))
        protocol = MeshQuicProtocol(connection)
        transport = None  # our own socket, when the mesh port's cannot reach `host`
        if self._mesh_socket_reaches(host):
            self.server.adopt(protocol)
        else:
            family_any = "::" if ipaddress.ip_address(host).version == 6 else "0.0.0.0"
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: protocol, local_addr=(family_any, 0))
        try:
            protocol.connect((host, port))
            await asyncio.wait_for(protocol.wait_connected(), timeout)
        except BaseException:  # timed out, refused or cancelled: end the connection, then its socket
            protocol.abandon()
            if transport is not None:
                transport.close()
            raise
        protocol.server_public_key = protocol.peer_public_key()
        self.clients.append((transport, protocol))
        asyncio.ensure_future(self._forget_when_closed(transport, protocol))
        reader, writer = await protocol.create_stream()
        writer.write(CONTROL_STREAM)
        return QuicLink(protocol, reader, writer, protocol.server_public_key)

    def _mesh_socket_reaches(self, host: str) -> bool:
        """Whether a dial to `host` can leave from the mesh port's socket: one of its family,
        and bound to loopback only if `host` is a loopback address too. (A socket bound to one
        address dials from that address: what the user chose by binding it.)"""
        if self.server is None or self.server._transport is None or self.server._transport.is_closing():
            return False
        bound = ipaddress.ip_address(self.server.bound_to()[0])
        target = ipaddress.ip_address(host)
        if bound.version != target.version:
            return False
        return not bound.is_loopback or target.is_loopback

    def punch(self, address: tuple[str, int]) -> bool:
        """One datagram from the mesh port to `address`, opening our NAT towards it (the
        peer's answer, or its dial, may then come in); False when the mesh port cannot."""
        return self.send_datagram(address, PUNCH_DATAGRAM)

    def send_datagram(self, address: tuple[str, int], data: bytes) -> bool:
        """`data` from the mesh port to `address` (a punch, a relay claim); False when it cannot."""
        if not self._mesh_socket_reaches(address[0]):
            return False
        self.server._transport.sendto(data, tuple(address))
        return True

    async def _forget_when_closed(self, transport, protocol: MeshQuicProtocol) -> None:
        await protocol.closed.wait()
        await asyncio.sleep(0)  # let the CONNECTION_CLOSE datagram leave first
        if transport is not None:
            transport.close()
        if (transport, protocol) in self.clients:
            self.clients.remove((transport, protocol))

    async def stop(self) -> None:
        for transport, protocol in list(self.clients):
            protocol.close()
            if transport is not None:
                transport.close()
            else:
                protocol.connection_lost(None)  # its timers stop: the mesh socket goes next
        self.clients.clear()
        if self.server is not None:
            self.server.close()
