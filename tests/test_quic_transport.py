"""The QUIC control transport over real UDP sockets: an abandoned dial leaves no timer behind.

A dial that times out or is cancelled (a join's overall bound, a stopping node) used to close
its socket while aioquic's connection still had a retransmission timer armed; the timer fired
later and wrote to the closed socket, and the log filled with `_handle_timer` tracebacks
(`'NoneType' object has no attribute 'sendto'`), one per dial to an address that did not answer.
"""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.adapters.quic import transport as quic_transport
from meshdesk.adapters.node_keys import NodeKey
from tests.mesh_tools import quic_transport as transport_for


class SilentPeer(asyncio.DatagramProtocol):
    """A UDP socket that reads every datagram and never answers (a host that is gone)."""

    def __init__(self):
        self.datagrams: list[bytes] = []

    def datagram_received(self, data, addr) -> None:
        self.datagrams.append(data)


@pytest.fixture
def watched(monkeypatch):
    """Every client connection the transport makes, to wait on its timers."""
    made: list[quic_transport.MeshQuicProtocol] = []
    original = quic_transport.MeshQuicProtocol.connection_made

    def connection_made(self, transport):
        made.append(self)
        original(self, transport)
    monkeypatch.setattr(quic_transport.MeshQuicProtocol, "connection_made", connection_made)
    return made


async def abandoned_dial(watched, abandon) -> list[dict]:
    """Dials a silent peer, gives up by `abandon`, and returns what reached the loop's exception
    handler until every timer the connection had armed has fired or been cancelled."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    socket_, peer = await loop.create_datagram_endpoint(SilentPeer, local_addr=("127.0.0.1", 0))
    transport = transport_for(NodeKey.generate())
    try:
        await abandon(transport.connect(socket_.get_extra_info("sockname"), 30.0), peer)
        [protocol] = watched
        deadline = loop.time() + 10.0  # the first retransmission is due within about a second
        while protocol._timer is not None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert protocol._timer is None, "the abandoned connection's timer is still armed"
        return reported
    finally:
        await transport.stop()
        socket_.close()


async def until(condition, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def time_out(dial, peer: SilentPeer) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await dial


async def cancel(dial, peer: SilentPeer) -> None:
    task = asyncio.ensure_future(dial)
    await until(lambda: peer.datagrams)  # the dial waits for an answer that never comes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("abandon", [time_out, cancel], ids=["timed-out", "cancelled"])
def test_an_abandoned_dial_leaves_no_timer_that_writes_to_its_closed_socket(watched, abandon):
    reported = asyncio.run(abandoned_dial(watched, abandon))
    assert [context.get("message") for context in reported] == []

