"""A relay (`core.relay_protocol`): registrations over TCP, and UDP datagrams forwarded between
a registered node's listening port and one session port per source.

It runs alone (`meshdesk relay --port N`, on any small server) or inside a node that offers to
relay for its mesh (then only for the mesh's members: `allowed`). It forwards bytes it cannot
read: the QUIC packets of members' connections. Anyone may register at a standalone relay, so
everything is bounded (`relay_parts.RelayLimits`): registrations per address and in all,
sessions per source and per node, bytes per second per session and in all, datagrams held for
a session not yet claimed; a session its node does not answer closes, and the oldest such
session makes room for a new one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable

from meshdesk.core import relay_protocol as rp
from meshdesk.core.frames import FrameError, encode_frame
from meshdesk.node.relay_parts import Bucket, Endpoint, FramedMessages, MAX_WRITE_BUFFER, Registration, RelayLimits
from meshdesk.node.relay_sessions import RelaySessions

__all__ = ["FramedMessages", "RelayLimits", "RelayServer"]

log = logging.getLogger(__name__)

PORTS_REMEMBERED = 4096  # nodes whose last listening port a relay without a range keeps for them


class RelayServer(RelaySessions):
    def __init__(self, verify, host: str = "0.0.0.0", port: int = 0,
                 ports: tuple[int, int] | None = None, limits: RelayLimits = RelayLimits(),
                 allowed: Callable[[str], bool] | None = None):
        self.verify = verify  # verify(public_key, data, signature) -> bool, as Credentials.verify
        self.host, self.port, self.ports, self.limits = host, port, ports, limits
        self.allowed = allowed  # which node ids may register; None: any
        self.registrations: dict[str, Registration] = {}
        self.forwarded_bytes = 0
        self._total = Bucket(limits.total_bytes_per_second, limits.total_bytes_per_second)
        self._last_ports: dict[str, int] = {}  # a node gets its port back after a blip
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
            if registration is not None:
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
        # Taken before any await, so registrations racing each other count against the limits.
        registration, replaced = Registration(node_id, address, writer), self.registrations.get(node_id)
        self.registrations[node_id] = registration
        if replaced is not None:  # the node again, from a new connection: the old one is stale
            self._drop(replaced)
        try:
            registration.port, registration.endpoint = await self._listening_endpoint(registration)
        except OSError as error:
            self._drop(registration)
            self._send(writer, rp.refused(f"no port for you: {error}"))
            return None
        if self.registrations.get(node_id) is not registration:  # a newer one took over meanwhile
            self._drop(registration)
            return None
        self._remember_port(node_id, registration.port)
        self._send(writer, rp.registered(registration.port))
        log.info("relay: %s registered from %s, reachable at port %d", node_id, address, registration.port)
        return registration

    def _no_room_for(self, node_id: str, address: str) -> str | None:
        if self.allowed is not None and not self.allowed(node_id):
            return "this relay is for its own mesh's members"
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
        """Ends `registration`, current or superseded: its sessions, its port, its connection."""
        if self.registrations.get(registration.node_id) is registration:
            del self.registrations[registration.node_id]
            log.info("relay: %s is no longer registered", registration.node_id)
        for session in list(registration.sessions.values()):
            self._close_session(registration, session)
        if registration.endpoint is not None and registration.endpoint.transport is not None:
            registration.endpoint.transport.close()
        registration.writer.close()

    @staticmethod
    def _send(writer: asyncio.StreamWriter, message: dict) -> None:
        """Queues `message`; a connection that does not read what we send is cut off."""
        if writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            writer.transport.abort()  # close() would wait for the buffer to drain: never
            return
        writer.write(encode_frame(message, max_frame_bytes=rp.MAX_CONTROL_FRAME))

    # --- ports ---------------------------------------------------------------------------

    async def _listening_endpoint(self, registration: Registration) -> tuple[int, Endpoint]:
        node_id = registration.node_id
        if self.ports is None:
            candidates = [port for port in (self._last_ports.get(node_id), 0) if port is not None]
        else:
            span = self.ports[1] - self.ports[0] + 1
            candidates = [rp.preferred_port(node_id, *self.ports, attempt) for attempt in range(min(64, span))]
        endpoint = Endpoint(lambda data, source: self._from_source(registration, data, source))
        for port in candidates:
            sock = self._bound_socket(port)
            if sock is not None:
                await asyncio.get_running_loop().create_datagram_endpoint(lambda: endpoint, sock=sock)
                return sock.getsockname()[1], endpoint
        raise OSError("no port of the relay's range is free")

    def _remember_port(self, node_id: str, port: int) -> None:
        self._last_ports.pop(node_id, None)
        self._last_ports[node_id] = port
        while len(self._last_ports) > PORTS_REMEMBERED:
            del self._last_ports[next(iter(self._last_ports))]

    def _bound_socket(self, port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, port))
            sock.setblocking(False)
            return sock
        except OSError:
            sock.close()
            return None
