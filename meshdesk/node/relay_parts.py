"""The relay's pieces (`node.relay_server`): its limits, token buckets, UDP endpoints, the state
of a registration and of a session, and framed messages off a TCP stream."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass, field

from meshdesk.core import relay_protocol as rp
from meshdesk.core.frames import FrameDecoder

MAX_DATAGRAM = 2048           # a QUIC packet is at most ~1500 bytes: anything larger is no member's
UNANSWERED_SECONDS = 10.0     # a session its node never answered (garbage, or a source that left)
CLAIM_MOVE_SECONDS = 2.0      # a claim from a new address counts once the old one has been quiet
MAX_WRITE_BUFFER = 64 << 10   # a control connection that reads nothing of ours is dropped


@dataclass(frozen=True)
class RelayLimits:
    registrations_per_address: int = 8
    registrations: int = 256
    sessions_per_source: int = 8   # per registered node, from one IP address
    sessions_per_node: int = 64
    sessions: int = 2048
    pending_datagrams: int = 32    # held for a session until the node claims it
    bytes_per_second: int = 32 << 20  # per session and direction; a burst may reach one second's
    total_bytes_per_second: int = 128 << 20  # the whole relay, both directions
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


class Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram):
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) <= MAX_DATAGRAM:
            self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc) -> None:
        pass  # an ICMP error for one datagram: the next may get through


@dataclass
class Session:
    port: int
    source: rp.Address
    token: bytes
    endpoint: Endpoint
    created: float
    towards_node: Bucket
    towards_source: Bucket
    claimed: rp.Address | None = None
    node_heard_at: float | None = None  # the node's last datagram (claims included)
    answered: bool = False              # the node sent the source something
    pending: deque = field(default_factory=deque)
    sock: socket.socket | None = None   # until the endpoint wraps it
    closed: bool = False

    def expired(self, now: float, idle_seconds: float) -> bool:
        """Only the node's traffic keeps a session: a source can send what it likes, but a
        session whose node stopped answering (its router forgot the mapping) must go, so the
        next datagram opens a new one that the node claims afresh."""
        if not self.answered:
            return now - self.created > UNANSWERED_SECONDS
        return now - self.node_heard_at > idle_seconds


@dataclass
class Registration:
    node_id: str
    address: str  # the IP its control connection came from
    writer: asyncio.StreamWriter
    port: int = 0
    endpoint: Endpoint | None = None
    sessions: dict[rp.Address, Session] = field(default_factory=dict)

    def oldest_unanswered(self) -> Session | None:
        waiting = [session for session in self.sessions.values() if not session.answered]
        return min(waiting, key=lambda session: session.created, default=None)


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
