"""llama.cpp RPC tunnels: the host's 127.0.0.1 listeners and the member's side, across in-memory links.

"llama.cpp" is a plain client socket and the member's rpc worker a plain 127.0.0.1 server in the
test; only the mesh link between host and member is a fake.
"""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.core.rpc_expander import FilePiece, ReferenceExpander
from meshdesk.core.rpc_stream import WeightReferencer
from meshdesk.node import rpc_tunnel
from meshdesk.node.interfaces import LinkClosed
from meshdesk.node.rpc_tunnel import HostTunnel, Traffic, serve_member_side
from tests.fakes import Loopback, eventually, link_pair, run_on_loopback, within
from tests.test_core_rpc_stream import DIGEST, EMBD, GGUF, HELLO, REFERENCE, TENSORS, message, reference, set_tensor

EMBD_DATA = GGUF[EMBD.file_offset:EMBD.file_offset + EMBD.nbytes]
WEIGHTS = set_tensor("token_embd.weight", 0, EMBD_DATA)  # llama.cpp uploading a weight it has on disk
REFERENCED = reference("token_embd.weight", 0, EMBD.file_offset, EMBD.nbytes, DIGEST)
CHANGED_DATA = bytes(255 - byte for byte in EMBD_DATA)
CHANGED = set_tensor("token_embd.weight", 0, CHANGED_DATA)  # same tensor, bytes not in the file
SET_TENSOR_HEADER = len(WEIGHTS) - len(EMBD_DATA)
HELLO_MESSAGE = message(HELLO, bytes(24))
REPLY = bytes(range(24))


def read_gguf(offset: int, length: int) -> bytes:
    return GGUF[offset:offset + length]


async def referencer(link=None) -> WeightReferencer:
    return WeightReferencer(TENSORS, read_gguf, DIGEST)


async def no_referencer(link) -> None:
    return None


def expander() -> ReferenceExpander:
    return ReferenceExpander({DIGEST: TENSORS})


def read_piece(piece: FilePiece) -> bytes:
    assert piece.digest == DIGEST
    return read_gguf(piece.offset, piece.length)


class RpcWorkerPort:
    """The member's rpc worker: a real 127.0.0.1 listener whose connections the test reads."""

    def __init__(self, loopback: Loopback):
        self.loopback = loopback
        self.connections: asyncio.Queue = asyncio.Queue()

    async def start(self) -> int:
        return await self.loopback.listen(self._accepted)

    async def _accepted(self, reader, writer) -> None:
        await self.connections.put((reader, writer))

    async def next(self):
        return await within(self.connections.get())


class Mesh:
    """open_link for the host: each call makes a link pair and hands the member's end on."""

    def __init__(self, serve_member=None):
        self.opened: list[tuple[str, str]] = []
        self.member_ends: asyncio.Queue = asyncio.Queue()
        self.serve_member = serve_member
        self.serving: list[asyncio.Task] = []
        self.failure: Exception | None = None

    async def open_link(self, member_id: str, purpose: str):
        self.opened.append((member_id, purpose))
        if self.failure is not None:
            raise self.failure
        near, far = link_pair(("host", "member"))
        if self.serve_member is not None:
            self.serving.append(asyncio.ensure_future(self.serve_member(far)))
        else:
            await self.member_ends.put(far.detach())
        return near

    async def member_end(self):
        return await within(self.member_ends.get())


async def host_tunnel(mesh: Mesh, traffic: Traffic, make_referencer=referencer):
    tunnel = HostTunnel("member-1", mesh.open_link, make_referencer, traffic)
    address = await tunnel.start()
    host, port = address.split(":")
    assert host == "127.0.0.1"  # llama.cpp's RPC is never reachable from the network
    return tunnel, int(port)


async def at_eof(reader: asyncio.StreamReader) -> bytes:
    """What is left before the connection's end; fails the test if the end does not come."""
    return await within(reader.read())


# --- the host's side -------------------------------------------------------------------------------

def test_weight_uploads_travel_as_references_and_the_traffic_is_counted():
    async def scenario(loopback):
        mesh, traffic = Mesh(), Traffic()
        tunnel, port = await host_tunnel(mesh, traffic)
        llama_reader, llama_writer = await loopback.connect(port)
        member_reader, member_writer = await mesh.member_end()
        llama_writer.write(HELLO_MESSAGE + WEIGHTS + CHANGED)
        expected = HELLO_MESSAGE + REFERENCED + CHANGED
        assert await within(member_reader.readexactly(len(expected))) == expected
        member_writer.write(REPLY)
        assert await within(llama_reader.readexactly(len(REPLY))) == REPLY
        assert mesh.opened == [("member-1", "rpc")]
        assert traffic.to_dict() == {
            "weights_sent_bytes": len(CHANGED_DATA),
            "weights_referenced_bytes": EMBD.nbytes,
            "activations_bytes": len(HELLO_MESSAGE) + SET_TENSOR_HEADER + len(REPLY),
            "round_trips": 1,
        }
        assert tunnel.layers_sent_bytes() == len(CHANGED_DATA)  # the layers the member receives
        await tunnel.stop()

    run_on_loopback(scenario)


def test_without_a_referencer_every_byte_passes_unchanged_as_activations():
    async def scenario(loopback):
        mesh, traffic = Mesh(), Traffic()
        tunnel, port = await host_tunnel(mesh, traffic, make_referencer=no_referencer)
        _, llama_writer = await loopback.connect(port)
        member_reader, _ = await mesh.member_end()
        llama_writer.write(HELLO_MESSAGE + WEIGHTS)
        assert await within(member_reader.readexactly(len(HELLO_MESSAGE + WEIGHTS))) == HELLO_MESSAGE + WEIGHTS
        assert traffic.to_dict() == {"weights_sent_bytes": 0, "weights_referenced_bytes": 0,
                                     "activations_bytes": len(HELLO_MESSAGE + WEIGHTS), "round_trips": 0}
        await tunnel.stop()

    run_on_loopback(scenario)


def test_each_wait_for_the_member_after_sending_counts_one_round_trip():
    async def scenario(loopback):
        mesh, traffic = Mesh(), Traffic()
        tunnel, port = await host_tunnel(mesh, traffic, make_referencer=no_referencer)
        llama_reader, llama_writer = await loopback.connect(port)
        member_reader, member_writer = await mesh.member_end()
        for exchange in range(3):  # a pass: several requests sent unanswered, then one reply
            llama_writer.write(HELLO_MESSAGE)
            llama_writer.write(HELLO_MESSAGE)
            await within(member_reader.readexactly(2 * len(HELLO_MESSAGE)))
            member_writer.write(REPLY)
            assert await within(llama_reader.readexactly(len(REPLY))) == REPLY
            assert traffic.round_trips == exchange + 1
        member_writer.write(REPLY)  # the member speaking unasked is no round trip
        await within(llama_reader.readexactly(len(REPLY)))
        assert traffic.round_trips == 3
        await tunnel.stop()

    run_on_loopback(scenario)


def test_each_llama_connection_gets_its_own_link_and_referencer():
    async def scenario(loopback):
        mesh, traffic = Mesh(), Traffic()
        tunnel, port = await host_tunnel(mesh, traffic)
        for _ in range(2):
            _, llama_writer = await loopback.connect(port)
            member_reader, _ = await mesh.member_end()
            llama_writer.write(WEIGHTS)  # a fresh stream: it starts with a message header again
            assert await within(member_reader.readexactly(len(REFERENCED))) == REFERENCED
        assert mesh.opened == [("member-1", "rpc")] * 2
        assert traffic.weights_referenced_bytes == 2 * EMBD.nbytes
        await tunnel.stop()

    run_on_loopback(scenario)


def test_llama_closing_its_connection_closes_the_member_side():
    async def scenario(loopback):
        mesh = Mesh()
        tunnel, port = await host_tunnel(mesh, Traffic())
        _, llama_writer = await loopback.connect(port)
        member_reader, _ = await mesh.member_end()
        llama_writer.write(HELLO_MESSAGE)
        llama_writer.close()
        assert await at_eof(member_reader) == HELLO_MESSAGE
        await eventually(lambda: not tunnel.connections)
        await tunnel.stop()

    run_on_loopback(scenario)


def test_the_member_side_closing_closes_llamas_connection():
    async def scenario(loopback):
        mesh = Mesh()
        tunnel, port = await host_tunnel(mesh, Traffic())
        llama_reader, _ = await loopback.connect(port)
        _, member_writer = await mesh.member_end()
        member_writer.write(REPLY)
        member_writer.close()
        assert await at_eof(llama_reader) == REPLY
        await eventually(lambda: not tunnel.connections)
        await tunnel.stop()

    run_on_loopback(scenario)


def test_llama_is_disconnected_when_no_link_to_the_member_opens():
    async def scenario(loopback):
        mesh = Mesh()
        mesh.failure = LinkClosed("member-1 is not connected")
        tunnel, port = await host_tunnel(mesh, Traffic())
        llama_reader, _ = await loopback.connect(port)
        assert await at_eof(llama_reader) == b""
        await eventually(lambda: not tunnel.connections)
        await tunnel.stop()

    run_on_loopback(scenario)


def test_a_stream_that_is_not_llama_rpc_is_dropped_on_both_sides():
    async def scenario(loopback):
        mesh = Mesh()
        tunnel, port = await host_tunnel(mesh, Traffic())
        llama_reader, llama_writer = await loopback.connect(port)
        member_reader, _ = await mesh.member_end()
        forged = REFERENCED  # only the tunnel itself may send a reference
        llama_writer.write(forged)
        assert await at_eof(member_reader) == b""
        assert await at_eof(llama_reader) == b""
        await tunnel.stop()

    run_on_loopback(scenario)


def test_stop_closes_the_listener_and_the_open_connections():
    async def scenario(loopback):
        errors = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        mesh = Mesh()
        tunnel, port = await host_tunnel(mesh, Traffic())
        llama_reader, _ = await loopback.connect(port)
        member_reader, _ = await mesh.member_end()
        await tunnel.stop()
        assert await at_eof(llama_reader) == b""
        assert await at_eof(member_reader) == b""
        with pytest.raises(ConnectionRefusedError):
            await loopback.connect(port)
        assert errors == []  # a cancelled connection is no error for asyncio to report

    run_on_loopback(scenario)


# --- the member's side -----------------------------------------------------------------------------

async def member_side(worker_port, traffic: Traffic):
    """A link whose member end is served by serve_member_side; the host's end as a byte stream."""
    host_link, member_link = link_pair(("host", "member"))
    serving = asyncio.ensure_future(serve_member_side(member_link, worker_port, expander, traffic, read_piece))
    return host_link, member_link, serving


def test_the_member_side_expands_references_for_its_worker_and_relays_the_replies():
    async def scenario(loopback):
        worker, traffic = RpcWorkerPort(loopback), Traffic()
        port = await worker.start()
        host_link, _, serving = await member_side(lambda: port, traffic)
        host_reader, host_writer = host_link.detach()
        host_writer.write(HELLO_MESSAGE + REFERENCED)
        worker_reader, worker_writer = await worker.next()
        expected = HELLO_MESSAGE + WEIGHTS
        assert await within(worker_reader.readexactly(len(expected))) == expected
        worker_writer.write(REPLY)
        assert await within(host_reader.readexactly(len(REPLY))) == REPLY
        assert traffic.weights_referenced_bytes == EMBD.nbytes and traffic.weights_sent_bytes == 0
        assert traffic.activations_bytes == len(HELLO_MESSAGE) + SET_TENSOR_HEADER + len(REPLY)
        host_writer.close()
        await within(serving)
        assert await at_eof(worker_reader) == b""  # the worker is free for the next client

    run_on_loopback(scenario)


def test_a_reference_arriving_one_byte_at_a_time_still_expands():
    async def scenario(loopback):
        worker = RpcWorkerPort(loopback)
        port = await worker.start()
        host_link, _, serving = await member_side(lambda: port, Traffic())
        _, host_writer = host_link.detach()
        worker_reader, _ = await worker.next()
        await host_writer.drain()  # lets the member side start reading before the first byte
        for index in range(len(REFERENCED)):
            host_writer.write(REFERENCED[index:index + 1])
            await host_writer.drain()
        assert await within(worker_reader.readexactly(len(WEIGHTS))) == WEIGHTS
        host_writer.close()
        await within(serving)

    run_on_loopback(scenario)


@pytest.mark.parametrize("malformed", [
    message(0x77, b"junk"),                                          # not an RPC command
    message(REFERENCE, b"short"),                                    # a reference of the wrong size
    reference("token_embd.weight", 0, EMBD.file_offset, EMBD.nbytes, "ab" * 32),  # a file it lacks
], ids=["unknown command", "short reference", "unknown file"])
def test_the_member_side_drops_a_stream_with_malformed_framing(malformed):
    async def scenario(loopback):
        worker = RpcWorkerPort(loopback)
        port = await worker.start()
        host_link, _, serving = await member_side(lambda: port, Traffic())
        host_reader, host_writer = host_link.detach()
        host_writer.write(HELLO_MESSAGE)
        worker_reader, _ = await worker.next()
        assert await within(worker_reader.readexactly(len(HELLO_MESSAGE))) == HELLO_MESSAGE
        host_writer.write(malformed + HELLO_MESSAGE)
        assert await at_eof(worker_reader) == b""  # nothing from the bad message on
        assert await at_eof(host_reader) == b""
        await within(serving)

    run_on_loopback(scenario)


def test_the_worker_closing_closes_the_host_side():
    async def scenario(loopback):
        worker = RpcWorkerPort(loopback)
        port = await worker.start()
        host_link, _, serving = await member_side(lambda: port, Traffic())
        host_reader, _ = host_link.detach()
        _, worker_writer = await worker.next()
        worker_writer.close()
        assert await at_eof(host_reader) == b""
        await within(serving)

    run_on_loopback(scenario)


def test_the_member_side_waits_for_a_worker_that_is_still_starting():
    async def scenario(loopback):
        worker = RpcWorkerPort(loopback)
        port = await worker.start()
        answers = iter([None, None, port])
        host_link, _, serving = await member_side(lambda: next(answers), Traffic())
        host_link.detach()[1].write(HELLO_MESSAGE)
        worker_reader, _ = await worker.next()
        assert await within(worker_reader.readexactly(len(HELLO_MESSAGE))) == HELLO_MESSAGE
        serving.cancel()

    run_on_loopback(scenario)


def test_a_member_without_a_worker_closes_the_link(monkeypatch):
    monkeypatch.setattr(rpc_tunnel, "WORKER_WAIT_SECONDS", 0.0)

    async def scenario(loopback):
        host_link, member_link, serving = await member_side(lambda: None, Traffic())
        await within(serving)
        assert member_link.close_reasons == ["no rpc worker here"]
        assert await at_eof(host_link.detach()[0]) == b""

    run_on_loopback(scenario)


# --- both sides ------------------------------------------------------------------------------------

def test_llama_and_the_worker_see_the_same_bytes_while_weights_cross_as_references():
    async def scenario(loopback):
        worker, host_traffic, member_traffic = RpcWorkerPort(loopback), Traffic(), Traffic()
        port = await worker.start()
        mesh = Mesh(lambda link: serve_member_side(link, lambda: port, expander, member_traffic, read_piece))
        tunnel, tunnel_port = await host_tunnel(mesh, host_traffic)
        llama_reader, llama_writer = await loopback.connect(tunnel_port)
        sent = HELLO_MESSAGE + WEIGHTS + CHANGED + HELLO_MESSAGE
        llama_writer.write(sent)
        worker_reader, worker_writer = await worker.next()
        assert await within(worker_reader.readexactly(len(sent))) == sent
        worker_writer.write(REPLY)
        assert await within(llama_reader.readexactly(len(REPLY))) == REPLY
        assert host_traffic.weights_referenced_bytes == member_traffic.weights_referenced_bytes == EMBD.nbytes
        assert host_traffic.weights_sent_bytes == len(CHANGED_DATA)
        llama_writer.close()
        assert await at_eof(worker_reader) == b""
        await within(asyncio.gather(*mesh.serving))
        await tunnel.stop()

    run_on_loopback(scenario)
