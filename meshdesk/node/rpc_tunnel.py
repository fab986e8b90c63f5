"""llama.cpp RPC through the mesh: the host's local listeners and the members' worker side.

On the host, llama.cpp connects to one 127.0.0.1 listener per remote member. Each connection
becomes an authenticated data-plane connection to that member, which connects it to its own rpc
worker. Weight uploads travel as references to the member's own copy of the GGUF
(`core.rpc_stream`); every other byte passes unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshdesk.core.rpc_expander import FilePiece, KeptPiece, ReferenceExpander
from meshdesk.core.rpc_stream import RpcStreamError, TrafficCounts, WeightReferencer
from meshdesk.node.loopback_owner import from_this_user

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
WORKER_WAIT_SECONDS = 15.0

Transform = Callable[[bytes], list]  # bytes in; bytes (and, member side, FilePieces) out
ReadPiece = Callable[[FilePiece], bytes]  # blocking: run in a thread
KeepPiece = Callable[[KeptPiece], None]  # blocking: run in a thread


@dataclass
class Traffic:
    """Bytes that crossed the data plane for split inference, by kind."""

    weights_sent_bytes: int = 0
    weights_referenced_bytes: int = 0
    activations_bytes: int = 0
    # Times a host waited on a remote member: bytes from the member after bytes to it. llama.cpp
    # sends a pass's inputs and graph without waiting, then asks for the result, so on a quiet
    # link this is one per pass per remote member, the figure latency multiplies.
    round_trips: int = 0
    layers: object = None  # a member's node.layer_member.LayerProgress: layers being received

    def add(self, counts: TrafficCounts, previous: TrafficCounts) -> None:
        self.weights_sent_bytes += counts.weights_sent_bytes - previous.weights_sent_bytes
        self.weights_referenced_bytes += counts.weights_referenced_bytes - previous.weights_referenced_bytes
        self.activations_bytes += counts.other_bytes - previous.other_bytes

    def to_dict(self) -> dict:
        return {"weights_sent_bytes": self.weights_sent_bytes,
                "weights_referenced_bytes": self.weights_referenced_bytes,
                "activations_bytes": self.activations_bytes,
                "round_trips": self.round_trips}


def counted(machine, traffic: Traffic) -> Transform:
    """Feeds a rewriting machine and books the byte counts it adds."""
    def transform(data: bytes) -> list[bytes]:
        before = TrafficCounts(**vars(machine.counts))
        pieces = machine.feed(data)
        traffic.add(machine.counts, before)
        return pieces
    return transform


def passthrough(traffic: Traffic) -> Transform:
    def transform(data: bytes) -> list[bytes]:
        traffic.activations_bytes += len(data)
        return [data]
    return transform


class TurnCounter:
    """Counts one host connection's round trips into `traffic.round_trips`: `sent` wraps the
    host-to-member transform, `received` the member-to-host one."""

    def __init__(self, traffic: Traffic):
        self.traffic = traffic
        self.waiting = False

    def sent(self, transform: Transform) -> Transform:
        def counting(data: bytes) -> list:
            self.waiting = True
            return transform(data)
        return counting

    def received(self, transform: Transform) -> Transform:
        def counting(data: bytes) -> list:
            if self.waiting:
                self.waiting = False
                self.traffic.round_trips += 1
            return transform(data)
        return counting


def no_file_pieces(piece: FilePiece) -> bytes:
    raise RpcStreamError("a file piece where no file may be read")


def no_kept_pieces(piece: KeptPiece) -> None:
    raise RpcStreamError("a kept piece where nothing is kept")


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transform: Transform,
               read_piece: ReadPiece = no_file_pieces, keep_piece: KeepPiece = no_kept_pieces) -> None:
    """Copies through `transform`; each FilePiece is read and written on its own, after the
    writer has drained, so an expanded reference never sits in memory as a whole. A KeptPiece
    goes to the writer and, off the event loop, into the layer cache."""
    try:
        while data := await reader.read(READ_CHUNK):
            for piece in transform(data):
                if isinstance(piece, FilePiece):
                    await writer.drain()
                    piece = piece.check(await asyncio.to_thread(read_piece, piece))
                elif isinstance(piece, KeptPiece):
                    writer.write(piece.data)
                    await asyncio.to_thread(keep_piece, piece)
                    continue
                writer.write(piece)
            await writer.drain()
    except (ConnectionError, RpcStreamError, OSError) as error:
        log.info("rpc tunnel closed: %s", error)
    finally:
        writer.close()


async def splice(a: tuple, b: tuple, a_to_b: Transform, b_to_a: Transform,
                 read_piece: ReadPiece = no_file_pieces, keep_piece: KeepPiece = no_kept_pieces) -> None:
    """Copies both ways until either side ends, then closes both."""
    (a_reader, a_writer), (b_reader, b_writer) = a, b
    tasks = [asyncio.ensure_future(pump(a_reader, b_writer, a_to_b, read_piece, keep_piece)),
             asyncio.ensure_future(pump(b_reader, a_writer, b_to_a))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        a_writer.close()
        b_writer.close()


class HostTunnel:
    """A 127.0.0.1 listener standing in for one remote member's rpc worker.

    Before the raw stream, `make_referencer(link)` may exchange messages on the link (the
    layer manifest, `node.layer_host`); it returns the connection's referencer, or None to
    pass everything through.

    Only connections that this node's own user opened (the model host child) are tunnelled:
    on Linux the connecting socket's owner is checked (`node.loopback_owner`); another local
    user's connection is closed before any link to the member opens.
    """

    def __init__(self, member_id: str, open_link: Callable[[str, str], Awaitable],
                 make_referencer: Callable[[object], Awaitable[WeightReferencer | None]], traffic: Traffic,
                 from_own_user: Callable[[tuple, tuple], bool] = from_this_user):
        self.member_id = member_id
        self.open_link = open_link
        self.make_referencer = make_referencer
        self.traffic = traffic
        self.from_own_user = from_own_user
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task] = set()
        self.refused_local = 0  # connections from another local user
        self.referencer: WeightReferencer | None = None  # the latest connection's (its counts)

    def layers_sent_bytes(self) -> int:
        """Weights the latest connection sent whole: the layers the member is receiving."""
        return 0 if self.referencer is None else self.referencer.counts.weights_sent_bytes

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _accepted(self, reader, writer) -> None:
        try:
            await self._tunnel(reader, writer)
        except asyncio.CancelledError:  # stop() or a new plan; nobody awaits this task, so asyncio
            writer.close()              # would log the cancellation as an error

    async def _tunnel(self, reader, writer) -> None:
        peer, listener = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        if not self.from_own_user(peer, listener):
            self.refused_local += 1
            log.warning("refused a local connection to the rpc tunnel for %s from %s:%s: another user's",
                        self.member_id, peer[0], peer[1])
            writer.close()
            return
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            link = await self.open_link(self.member_id, "rpc")
        except Exception as error:  # llama.cpp sees a closed connection and its host restarts
            log.warning("no rpc tunnel to %s: %s", self.member_id, error)
            writer.close()
            self.connections.discard(task)
            return
        try:
            referencer = await self.make_referencer(link)
        except Exception as error:  # the member refused, broke the exchange, or went away
            log.warning("no rpc tunnel to %s: the layer exchange failed: %s", self.member_id, error)
            link.close("layer exchange failed")
            writer.close()
            self.connections.discard(task)
            return
        self.referencer = referencer
        upstream = counted(referencer, self.traffic) if referencer else passthrough(self.traffic)
        turns = TurnCounter(self.traffic)
        try:
            await splice((reader, writer), link.detach(), turns.sent(upstream), turns.received(passthrough(self.traffic)))
        finally:
            self.connections.discard(task)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()


async def serve_member_side(link, worker_port: Callable[[], int | None],
                            make_expander: Callable[[], ReferenceExpander], traffic: Traffic,
                            read_piece: ReadPiece = no_file_pieces, keep_piece: KeepPiece = no_kept_pieces) -> None:
    """A member's end: the host's tunnel, spliced onto this node's rpc worker; what the host
    sends passes the expander's allow-list, references come from `read_piece`, the bytes of
    layers it keeps go to `keep_piece` too."""
    port = await wait_for_worker(worker_port)
    if port is None:
        link.close("no rpc worker here")
        return
    worker = await asyncio.open_connection("127.0.0.1", port)
    await splice(link.detach(), worker, counted(make_expander(), traffic), passthrough(traffic),
                 read_piece, keep_piece)


async def wait_for_worker(worker_port: Callable[[], int | None]) -> int | None:
    deadline = asyncio.get_running_loop().time() + WORKER_WAIT_SECONDS
    while (port := worker_port()) is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return port
