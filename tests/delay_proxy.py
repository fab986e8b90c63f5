"""A delaying TCP proxy for tests and benches: one-way latency on a loopback link.

`tc netem` is not available on these kernels, so the delay is added in user space. Each chunk
is stamped when it is read and written when its stamp plus the delay comes due, in order: a
delay adds latency without serialising throughput (many chunks are in flight at once), and no
bandwidth cap is applied. The proxy runs its own event loop on its own thread, so blocking
tests and benches can use it beside their child processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

READ_CHUNK = 1 << 16
START_SECONDS = 10.0


class TurnCount:
    """Round trips of one connection, as the host tunnel's TurnCounter counts them: a chunk
    from the target after at least one chunk was written to it since the last one from it."""

    def __init__(self, on_round_trip: Callable[[], None]):
        self.on_round_trip = on_round_trip
        self.waiting = False

    def wrote_to_target(self) -> None:
        self.waiting = True

    def read_from_target(self) -> None:
        if self.waiting:
            self.waiting = False
            self.on_round_trip()


class DelayProxy:
    """A user-space TCP proxy on 127.0.0.1 between a client and `target`: each byte written
    towards the target is held `to_target_s` seconds (one-way delay), bytes back `from_target_s`;
    order is kept, no bandwidth cap. Counts round trips as TurnCounter does (a chunk from the
    target after >=1 chunk to it since the last one from it). Runs on its own thread + loop."""

    def __init__(self, target: tuple[str, int], to_target_s: float = 0.0, from_target_s: float = 0.0):
        self.target = target
        self.to_target_s = to_target_s
        self.from_target_s = from_target_s
        self.address: tuple[str, int] | None = None
        self._counts = {"round_trips": 0, "bytes_to_target": 0, "bytes_from_target": 0, "connections": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    # --- the blocking side ----------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Listens on an ephemeral loopback port; returns ("127.0.0.1", port)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accepted, "127.0.0.1", 0))
        self.address = ("127.0.0.1", self._server.sockets[0].getsockname()[1])
        return self.address

    def set_delay(self, to_target_s: float, from_target_s: float = 0.0) -> None:
        """Applies to chunks read from now on; chunks already held keep their due times."""
        self.to_target_s, self.from_target_s = to_target_s, from_target_s

    def counters(self) -> dict:
        return dict(self._counts)

    def stop(self) -> None:
        """Closes the listener and every connection, then ends the loop and its thread."""
        if self._loop is None:
            return
        self._call(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_SECONDS)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> DelayProxy:
        self.start()
        return self

    def __exit__(self, *exception) -> None:
        self.stop()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(START_SECONDS)

    # --- the loop's side --------------------------------------------------------------------------

    async def _close_all(self) -> None:
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accepted(self, client_reader, client_writer) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        self._counts["connections"] += 1
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            self._connections.discard(task)
            return
        turns = TurnCount(self._count_round_trip)
        directions = [
            self._direction(client_reader, target_writer, lambda: self.to_target_s, "bytes_to_target",
                            wrote=turns.wrote_to_target),
            self._direction(target_reader, client_writer, lambda: self.from_target_s, "bytes_from_target",
                            read=turns.read_from_target)]
        tasks = [asyncio.ensure_future(direction) for direction in directions]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            pass  # stop(): asyncio would log a cancelled connection handler as an error
        finally:
            for direction in tasks:
                direction.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # a reset peer is no news
            client_writer.close()
            target_writer.close()
            self._connections.discard(task)

    def _count_round_trip(self) -> None:
        self._counts["round_trips"] += 1

    async def _direction(self, reader, writer, delay: Callable[[], float], counter: str,
                         read: Callable[[], None] = lambda: None, wrote: Callable[[], None] = lambda: None) -> None:
        """Reads chunks, each stamped with the time it is due, and writes them when due, in
        order; at the end of the stream, half-closes the other side."""
        held: asyncio.Queue = asyncio.Queue()
        writing = asyncio.ensure_future(self._write_when_due(held, writer, wrote))
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(READ_CHUNK):
                read()
                self._counts[counter] += len(chunk)
                held.put_nowait((loop.time() + delay(), chunk))
            held.put_nowait(None)
            await writing
        finally:
            writing.cancel()

    @staticmethod
    async def _write_when_due(held: asyncio.Queue, writer, wrote: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        while (item := await held.get()) is not None:
            due, chunk = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            wrote()
            await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
