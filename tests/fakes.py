"""In-memory stand-ins for what node/ classes talk to: peer links, byte streams, child processes, time.

Each fake keeps the semantics the real thing has and a node class relies on: a closed link
delivers what was sent before the close and then raises LinkClosed; a closed byte stream reads
EOF on both ends; a child process's stdout closes when it exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from meshdesk.core.frames import FrameError
from meshdesk.core.openai_api import GenerationRequest, parse_chat_request
from meshdesk.node.interfaces import LinkClosed

DEADLINE_SECONDS = 5.0


def run(coroutine: Coroutine, timeout: float = DEADLINE_SECONDS) -> Any:
    """Runs a test scenario on a fresh loop; a hang fails it within `timeout` instead of stalling."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Polls `condition` until it holds; fails the test once the deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition did not become true in time")
        await asyncio.sleep(0.001)


async def within(awaitable: Awaitable, timeout: float = 2.0) -> Any:
    return await asyncio.wait_for(awaitable, timeout)


def run_on_loopback(scenario: Callable[[Loopback], Coroutine], timeout: float = DEADLINE_SECONDS) -> Any:
    """`run` for a scenario that opens real 127.0.0.1 sockets; they are closed when it ends."""
    async def main():
        loopback = Loopback()
        try:
            return await scenario(loopback)
        finally:
            await loopback.close()
    return run(main(), timeout)


class Loopback:
    """Real 127.0.0.1 connections and listeners opened by a test, closed together at its end."""

    def __init__(self):
        self._writers: list[asyncio.StreamWriter] = []
        self._servers: list[asyncio.Server] = []

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._writers.append(writer)
        return reader, writer

    async def listen(self, on_connection: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable]) -> int:
        async def accepted(reader, writer):
            self._writers.append(writer)
            await on_connection(reader, writer)
        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for closable in [*self._servers, *self._writers]:
            closable.close()
        for writer in self._writers:
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        for server in self._servers:
            await server.wait_closed()


# --- byte streams ----------------------------------------------------------------------------------

class MemoryConnection:
    """Two ends of an in-memory duplex byte stream; closing either end closes the connection."""

    def __init__(self):
        readers = (asyncio.StreamReader(), asyncio.StreamReader())
        self.closed = False
        self.ends = (
            (readers[0], MemoryStreamWriter(self, peer_reader=readers[1])),
            (readers[1], MemoryStreamWriter(self, peer_reader=readers[0])),
        )
        self._readers = readers

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for reader in self._readers:
            reader.feed_eof()  # bytes written before the close are still read first


class MemoryStreamWriter:
    """The writing half of one end of a MemoryConnection, shaped like asyncio.StreamWriter."""

    def __init__(self, connection: MemoryConnection, peer_reader: asyncio.StreamReader):
        self.connection = connection
        self.peer_reader = peer_reader

    def write(self, data: bytes) -> None:
        if not self.connection.closed:  # like a closing transport, later writes are dropped
            self.peer_reader.feed_data(bytes(data))

    async def drain(self) -> None:
        if self.connection.closed:
            raise ConnectionResetError("connection closed")
        await asyncio.sleep(0)

    def close(self) -> None:
        self.connection.close()

    def is_closing(self) -> bool:
        return self.connection.closed

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 0) if name == "peername" else default


def stream_pair() -> tuple[tuple[asyncio.StreamReader, MemoryStreamWriter], ...]:
    return MemoryConnection().ends


# --- message links ---------------------------------------------------------------------------------

_END = object()


class MemoryLink:
    """One end of an in-memory MessageLink pair; `detach()` hands over a byte stream like TlsLink's."""

    plane = "tls"

    def __init__(self, name: str, stream: tuple):
        self.name = name
        self.remote_address = ("127.0.0.1", 0)
        self.server_public_key: bytes | None = None
        self.client_public_key: bytes | None = None
        self.peer: MemoryLink | None = None
        self.closed = False
        self.close_reasons: list[str] = []
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._stream = stream
        self._peer_ended = False
        self._unread = 0  # messages waiting in the inbox

    async def send(self, message: dict) -> None:
        if self.closed or self.peer.closed:
            raise LinkClosed(f"{self.name}: link closed")
        copy = json.loads(json.dumps(message))  # what crosses a real link is JSON, not objects
        self.peer._inbox.put_nowait(copy)
        self.peer._unread += 1
        await asyncio.sleep(0)

    async def receive(self) -> dict:
        if self.closed or (self._peer_ended and self._inbox.empty()):
            raise LinkClosed(f"{self.name}: link closed")
        item = await self._inbox.get()
        if item is _END:
            self._peer_ended = True
            raise LinkClosed(f"{self.name}: link closed")
        self._unread -= 1
        if isinstance(item, Exception):
            raise item
        return item

    def deliver_malformed(self, detail: str = "malformed frame") -> None:
        """The next receive here meets bytes that are not a frame."""
        self._inbox.put_nowait(FrameError(detail))
        self._unread += 1

    def authenticated(self) -> None:
        pass

    def detach(self) -> tuple:
        if self._unread:
            raise FrameError("the peer sent data before the stream was handed over")
        return self._stream

    def close(self, reason: str = "") -> None:
        self.close_reasons.append(reason)
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(_END)  # wakes a receive waiting here
        self.peer._inbox.put_nowait(_END)
        self._stream[1].close()


def link_pair(names: tuple[str, str] = ("near", "far")) -> tuple[MemoryLink, MemoryLink]:
    near_stream, far_stream = stream_pair()
    near, far = MemoryLink(names[0], near_stream), MemoryLink(names[1], far_stream)
    near.peer, far.peer = far, near
    return near, far


# --- child processes -------------------------------------------------------------------------------

class FakeStdin:
    def __init__(self):
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeProcess:
    """An asyncio.subprocess.Process the test drives: it prints lines and exits when told."""

    def __init__(self, pid: int, limit: int):
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = FakeStdin()
        self.stdout = asyncio.StreamReader(limit=limit)
        self.signals: list[str] = []
        self.exits_on_terminate = True
        self._exited = asyncio.Event()

    def announce(self, announcement: dict) -> None:
        self.print_line(json.dumps(announcement).encode())

    def print_line(self, line: bytes) -> None:
        self.stdout.feed_data(line + b"\n")

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self.stdout.feed_eof()
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        return self.returncode

    def terminate(self) -> None:
        self.signals.append("terminate")
        if self.exits_on_terminate:
            self.exit(-15)

    def kill(self) -> None:
        self.signals.append("kill")
        self.exit(-9)

    def send_signal(self, number: int) -> None:
        self.signals.append(signal.Signals(number).name)


class ProcessStarter:
    """Stands in for asyncio.create_subprocess_exec; hands each started FakeProcess to the test."""

    def __init__(self):
        self.calls: list[tuple[tuple, dict]] = []
        self.failure: Exception | None = None
        self._started: asyncio.Queue = asyncio.Queue()
        self._next_pid = 4000

    async def __call__(self, *command: str, **options) -> FakeProcess:
        self.calls.append((command, options))
        if self.failure is not None:
            raise self.failure
        self._next_pid += 1
        process = FakeProcess(self._next_pid, options.get("limit", 1 << 16))
        self._started.put_nowait(process)
        return process

    async def next_process(self, timeout: float = 2.0) -> FakeProcess:
        return await asyncio.wait_for(self._started.get(), timeout)

    @property
    def waiting(self) -> int:
        return self._started.qsize()


# --- time ------------------------------------------------------------------------------------------

class ManualClock:
    """Time that moves only when a test advances it or something sleeps on it."""

    def __init__(self, now: float = 1000.0):
        self.now = now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # still a suspension point, so a restart loop cannot starve the others


# --- requests --------------------------------------------------------------------------------------

def chat_request(text: str, model: str = "tiny") -> GenerationRequest:
    return parse_chat_request({"model": model, "messages": [{"role": "user", "content": text}], "stream": True})
