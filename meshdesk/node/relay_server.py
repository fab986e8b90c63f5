"""A relay (`core.relay_protocol`): registrations over TCP, and UDP datagrams forwarded between
a registered node's listening port and one session port per source.

It runs alone (`meshdesk relay --port N`, on any small server) or inside a node that offers to
relay for its mesh. It forwards bytes it cannot read: the QUIC packets of members' connections.
Anyone may register, so everything is bounded: registrations per address and in all, sessions
per source and per node, bytes per second per session, and idle sessions close.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
from collections import deque
from dataclasses import dataclass, field

from meshdesk.core import relay_protocol as rp
from meshdesk.core.frames import FrameDecoder, FrameError, encode_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayLimits:
    registrations_per_address: int = 8
    registrations: int = 256
    sessions_per_source: int = 8   # per registered node, from one IP address
    sessions_per_node: int = 64
    sessions: int = 2048
    pending_datagrams: int = 32    # held for a session until the node claims it
    bytes_per_second: int = 32 << 20  # per session and direction; a burst may reach one second's
    session_idle_seconds: float = rp.SESSION_IDLE_SECONDS
    control_idle_seconds: float = rp.CONTROL_IDLE_SECONDS


@dataclass
class Bucket:
    """A token bucket of bytes, refilled at `rate` per second up to `rate`."""

    rate: int
    level: float = 0.0
    at: float = 0.0

    def take(self, now: float, size: int) -> bool:
        self.level = min(self.rate, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level < size:
            return False
        self.level -= size
        return True


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram):
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc) -> None:
        pass  # an ICMP error for one datagram: the next may get through


@dataclass
class Session:
    port: int
    source: rp.Address
    token: bytes
    endpoint: _Endpoint
    claimed: rp.Address | None = None
    pending: deque = field(default_factory=deque)
    last_active: float = 0.0
    towards_node: Bucket | None = None
    towards_source: Bucket | None = None


@dataclass
class Registration:
    node_id: str
    address: str  # the IP its control connection came from
    writer: asyncio.StreamWriter
    port: int = 0
    endpoint: _Endpoint | None = None
    sessions: dict[rp.Address, Session] = field(default_factory=dict)


class RelayServer:
    def __init__(self, verify, host: str = "0.0.0.0", port: int = 0,
                 ports: tuple[int, int] | None = None, limits: RelayLimits = RelayLimits()):
        self.verify = verify  # verify(public_key, data, signature) -> bool, as Credentials.verify
        self.host, self.port, self.ports, self.limits = host, port, ports, limits
        self.registrations: dict[str, Registration] = {}
        self.forwarded_bytes = 0
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()

    # --- running -------------------------------------------------------------------------

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._control, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.ensure_future(self._sweep())
        log.info("relaying on %s port %d (registrations on TCP, datagrams on UDP %s)", self.host, self.port,
                 "ports the system picks" if self.ports is None else "ports %d-%d" % self.ports)
        return self.port

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for registration in list(self.registrations.values()):
            self._drop(registration)
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def session_count(self) -> int:
        return sum(len(registration.sessions) for registration in self.registrations.values())

    # --- registrations -------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")[0]
        self._handlers.add(asyncio.current_task())
        messages = FramedMessages(reader)
        registration = None
        try:
            registration = await self._register(messages, writer, address)
            if registration is not None:
                await self._serve_control(messages, registration)
        except (FrameError, rp.RelayProtocolError) as error:
            log.info("relay: dropping a control connection from %s: %s", address, error)
            self._send(writer, rp.refused(str(error)))
        except (ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # the relay stops (asyncio's stream callback must not see a cancelled task)
        finally:
            self._handlers.discard(asyncio.current_task())
            if registration is not None and self.registrations.get(registration.node_id) is registration:
                self._drop(registration)
            writer.close()

    async def _register(self, messages, writer, address: str) -> Registration | None:
        nonce = secrets.token_bytes(rp.NONCE_BYTES)
        self._send(writer, rp.challenge(nonce))
        async with asyncio.timeout(rp.REGISTER_TIMEOUT):
            message = await messages.next()
        node_id = rp.read_registration(message, nonce, self.verify)
        reason = self._no_room_for(node_id, address)
        if reason:
            self._send(writer, rp.refused(reason))
            return None
        replaced = self.registrations.get(node_id)
        if replaced is not None:  # the node again, from a new connection: the old one is stale
            self._drop(replaced)
        registration = Registration(node_id, address, writer)
        registration.port, registration.endpoint = await self._listening_endpoint(registration)
        self.registrations[node_id] = registration
        self._send(writer, rp.registered(registration.port))
        log.info("relay: %s registered from %s, reachable at port %d", node_id, address, registration.port)
        return registration

    def _no_room_for(self, node_id: str, address: str) -> str | None:
        others = [r for r in self.registrations.values() if r.node_id != node_id]
        if len(others) >= self.limits.registrations:
            return "this relay is full"
        if sum(r.address == address for r in others) >= self.limits.registrations_per_address:
            return "too many registrations from this address"
        return None

    async def _serve_control(self, messages, registration: Registration) -> None:
        while True:
            async with asyncio.timeout(self.limits.control_idle_seconds):
                message = await messages.next()
            if message.get("type") == "ping":
                self._send(registration.writer, {"type": "pong"})
            else:
                raise rp.RelayProtocolError(f"an unexpected {str(message.get('type'))[:40]!r} message")

    def _drop(self, registration: Registration) -> None:
        if self.registrations.get(registration.node_id) is registration:
            del self.registrations[registration.node_id]
        for session in list(registration.sessions.values()):
            self._close_session(registration, session)
        if registration.endpoint is not None and registration.endpoint.transport is not None:
            registration.endpoint.transport.close()
        registration.writer.close()
        log.info("relay: %s is no longer registered", registration.node_id)

    @staticmethod
    def _send(writer: asyncio.StreamWriter, message: dict) -> None:
        if not writer.is_closing():
            writer.write(encode_frame(message, max_frame_bytes=rp.MAX_CONTROL_FRAME))

    # --- ports ---------------------------------------------------------------------------

    async def _listening_endpoint(self, registration: Registration) -> tuple[int, _Endpoint]:
        def preferred(attempt: int) -> int:
            return rp.preferred_port(registration.node_id, *self.ports, attempt)
        endpoint = _Endpoint(lambda data, source: self._from_source(registration, data, source))
        return await self._bind(endpoint, preferred)

    async def _bind(self, endpoint: _Endpoint, candidate) -> tuple[int, _Endpoint]:
        """A UDP socket for `endpoint` on a port of the range (`candidate(attempt)`), or any free one."""
        attempts = 1 if self.ports is None else min(64, self.ports[1] - self.ports[0] + 1)
        for attempt in range(attempts):
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, 0 if self.ports is None else candidate(attempt)))
            except OSError:
                sock.close()
                continue
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock)
            return sock.getsockname()[1], endpoint
        raise OSError("no port of the relay's range is free")

    # --- sessions ------------------------------------------------------------------------

    def _from_source(self, registration: Registration, data: bytes, source: rp.Address) -> None:
        """A datagram to a node's listening port: into its session with `source`, made if new."""
        session = registration.sessions.get(source)
        if session is None:
            session = self._open_session(registration, source)
            if session is None:
                return
        now = asyncio.get_running_loop().time()
        session.last_active = now
        if session.claimed is None or session.endpoint.transport is None:
            if len(session.pending) < self.limits.pending_datagrams:
                session.pending.append(data)
        elif session.towards_node.take(now, len(data)):
            self.forwarded_bytes += len(data)
            session.endpoint.transport.sendto(data, session.claimed)

    def _open_session(self, registration: Registration, source: rp.Address) -> Session | None:
        if self.session_count() >= self.limits.sessions \
                or len(registration.sessions) >= self.limits.sessions_per_node \
                or sum(s.source[0] == source[0] for s in registration.sessions.values()) \
                >= self.limits.sessions_per_source:
            return None
        token = secrets.token_bytes(rp.TOKEN_BYTES)
        endpoint = _Endpoint(lambda data, sender: self._from_node(registration, session, data, sender))
        sock = self._session_socket()
        if sock is None:
            return None
        rate = self.limits.bytes_per_second
        session = Session(sock.getsockname()[1], source, token, endpoint,
                          towards_node=Bucket(rate, rate), towards_source=Bucket(rate, rate))
        registration.sessions[source] = session
        asyncio.ensure_future(asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock))
        self._send(registration.writer, rp.session(session.port, token))
        log.info("relay: session at port %d for %s, from %s:%d", session.port, registration.node_id, *source)
        return session

    def _session_socket(self) -> socket.socket | None:
        """A bound UDP socket for a session, at once (datagrams arrive before any await)."""
        tries = [0] if self.ports is None else [random.randint(*self.ports) for _ in range(16)]
        for port in tries:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, port))
                sock.setblocking(False)
                return sock
            except OSError:
                sock.close()
        return None

    def _from_node(self, registration: Registration, session: Session, data: bytes, sender: rp.Address) -> None:
        """A datagram to a session port: the node's claim, or its packet for the source."""
        now = asyncio.get_running_loop().time()
        token = rp.claimed_token(data)
        if token is not None:
            if secrets.compare_digest(token, session.token):
                session.claimed, session.last_active = sender, now
                self._flush(registration, session)
            return
        if sender != session.claimed or registration.endpoint.transport is None:
            return  # not the node's end: nobody else may speak through its session
        session.last_active = now
        if session.towards_source.take(now, len(data)):
            self.forwarded_bytes += len(data)
            registration.endpoint.transport.sendto(data, session.source)

    def _flush(self, registration: Registration, session: Session) -> None:
        if session.endpoint.transport is None:
            return  # the socket is being wrapped: the node's claims come again
        while session.pending:
            data = session.pending.popleft()
            self.forwarded_bytes += len(data)
            session.endpoint.transport.sendto(data, session.claimed)

    def _close_session(self, registration: Registration, session: Session) -> None:
        registration.sessions.pop(session.source, None)
        if session.endpoint.transport is not None:
            session.endpoint.transport.close()

    async def _sweep(self) -> None:
        """Closes sessions no datagram crossed for a while (their node or source is gone)."""
        while True:
            await asyncio.sleep(self.limits.session_idle_seconds / 4)
            now = asyncio.get_running_loop().time()
            for registration in list(self.registrations.values()):
                for session in list(registration.sessions.values()):
                    if now - session.last_active > self.limits.session_idle_seconds:
                        self._close_session(registration, session)


class FramedMessages:
    """Frames off a TCP stream, one message at a time."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.decoder = FrameDecoder(rp.MAX_CONTROL_FRAME)
        self.ready: deque[dict] = deque()

    async def next(self) -> dict:
        while not self.ready:
            data = await self.reader.read(4096)
            if not data:
                raise ConnectionError("the connection closed")
            self.ready.extend(self.decoder.feed(data))
        return self.ready.popleft()
