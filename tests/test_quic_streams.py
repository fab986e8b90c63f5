"""Dials from the mesh port and data streams over real QUIC sockets (loopback, in-process).

- A dial leaves from the mesh port's own socket: the peer sees it from that port, the one a
  hole punch must reach (before, every dial came from a fresh port).
- A data stream the acceptor opens before the dialler has taken the link in is held for it,
  not taken for a stranger's stream (which closed the whole, possibly just punched, link).
- A stream we close is stopped: the peer's further writes fail, and nothing it sends is kept.
- A dial given up from the mesh port leaves no failed future behind for asyncio to report.
"""

from __future__ import annotations

import asyncio
import gc

from meshdesk.adapters.node_keys import NodeKey
from tests.mesh_tools import quic_transport

HOST = "127.0.0.1"


class Pair:
    """Two started transports; `accepted` gets the links the second one accepts."""

    def __init__(self):
        self.dialler, self.acceptor = quic_transport(NodeKey.generate()), quic_transport(NodeKey.generate())
        self.accepted: asyncio.Queue = asyncio.Queue()
        self.on_accepted = None  # called with each accepted link, before it is queued

    async def start(self) -> None:
        self.dialler_port = await self.dialler.start(HOST, 0, self._ignore)
        self.acceptor_port = await self.acceptor.start(HOST, 0, self._accepted)

    async def _ignore(self, link) -> None:
        link.close("not expected")

    async def _accepted(self, link) -> None:
        if self.on_accepted is not None:
            await self.on_accepted(link)
        await self.accepted.put(link)
        await link.protocol.closed.wait()

    async def link(self):
        dialled = await self.dialler.connect((HOST, self.acceptor_port))
        await dialled.send({"type": "hello"})  # the acceptor hears of the link on its first bytes
        return dialled, await asyncio.wait_for(self.accepted.get(), 5)

    async def stop(self) -> None:
        await self.dialler.stop()
        await self.acceptor.stop()


def run(scenario):
    async def main():
        pair = Pair()
        await pair.start()
        try:
            return await scenario(pair)
        finally:
            await pair.stop()
    return asyncio.run(main())


def test_a_dial_is_seen_from_the_dialling_nodes_own_port():
    async def scenario(pair):
        _, accepted = await pair.link()
        return accepted.remote_address[1], pair.dialler_port
    seen, listening = run(scenario)
    assert seen == listening


def test_a_stream_the_acceptor_opens_first_waits_for_the_dialler_to_take_the_link():
    async def scenario(pair):
        async def open_at_once(link):  # the acceptor's node wants a tunnel the moment it links
            link.accept_streams(lambda stream: asyncio.sleep(0))
            stream = await link.open_stream()
            await stream.send({"type": "open", "purpose": "rpc"})
        pair.on_accepted = open_at_once
        dialled, _ = await pair.link()
        got = asyncio.get_running_loop().create_future()

        async def on_stream(stream):
            got.set_result(await stream.receive())
        await until(lambda: dialled.protocol.early_streams or dialled.closed)  # it came before we were ready
        assert not dialled.closed, dialled.protocol.close_reason
        dialled.accept_streams(on_stream)
        return await asyncio.wait_for(got, 5), dialled.closed
    opening, closed = run(scenario)
    assert opening == {"type": "open", "purpose": "rpc"} and not closed


def test_a_stream_we_close_stops_the_sender_and_keeps_nothing():
    async def scenario(pair):
        refused = asyncio.Event()
        stream_ids = []

        async def refuse(stream):
            stream_ids.append(stream.writer.stream_id)
            stream.close("no such channel")
            refused.set()

        async def on_accepted(link):
            link.accept_streams(refuse)
        pair.on_accepted = on_accepted
        dialled, accepted = await pair.link()
        stream = await dialled.open_stream()
        await stream.send({"type": "open", "purpose": "shell"})
        await asyncio.wait_for(refused.wait(), 5)
        _, writer = stream.detach()
        chunk, sent = b"x" * 65536, 0
        failure = None
        try:
            async with asyncio.timeout(10):
                while True:
                    writer.write(chunk)
                    sent += len(chunk)
                    await writer.drain()
        except ConnectionResetError as error:
            failure = error
        kept = accepted.protocol._stream_readers.get(stream_ids[0])
        return failure, sent, kept, stream_ids[0] in accepted.protocol.discarded, accepted.closed
    failure, sent, kept, discarded, closed = run(scenario)
    assert failure is not None, f"the sender wrote {sent} bytes into a stream that was closed"
    assert kept is None and discarded and not closed


def test_a_dial_given_up_from_the_mesh_port_leaves_no_failed_future_behind():
    async def scenario(pair):
        loop = asyncio.get_running_loop()
        reported: list[dict] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))
        silent, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(HOST, 0))
        try:
            try:
                await pair.dialler.connect(silent.get_extra_info("sockname"), 0.3)
            except TimeoutError:
                pass
            # the connection lives on in the mesh socket until aioquic ends it (a few PTOs)
            await until(lambda: not pair.dialler.server._protocols, within=20)
            gc.collect()  # an unretrieved exception is reported when its future is collected
            await asyncio.sleep(0)
            return reported
        finally:
            silent.close()
    assert run(scenario) == []


async def until(condition, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
