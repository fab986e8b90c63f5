"""Data streams over QUIC (`adapters.quic.streams`) against someone who tries them, over real
sockets against real nodes (loopback).

- A stranger that opens a data stream before any handshake has its connection closed, and
  nothing it sent reaches a tunnel; the node goes on.
- A member may open streams on its own link, but only for a purpose that exists and that it
  may use: an unknown purpose, or an rpc tunnel to a node that does not serve it, is closed,
  and the member's control link and the honest mesh are unharmed.
- Through that same path, the member's api stream is served: the honest use works.
"""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.adapters.node_keys import NodeKey
from meshdesk.adapters.quic.streams import DATA_STREAM
from meshdesk.core.frames import encode_frame
from meshdesk.core.invite import decode_token
from meshdesk.node.interfaces import LinkClosed
from tests.mesh_tools import quic_transport
from tests.test_mesh_gossip_attacks import SETTLE, Member, assert_unharmed, honest_mesh, peer, until

pytestmark = pytest.mark.slow


async def read_until_closed(stream, timeout: float = SETTLE) -> list[dict]:
    """What arrives on `stream` until the node ends it; then ours ends too."""
    got = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                got.append(await stream.receive())
        except LinkClosed:
            stream.close()
            return got


def test_a_stranger_opening_a_data_stream_before_the_handshake_is_cut_off(node_factory):
    founder, friend, token, _ = honest_mesh(node_factory)

    async def attack():
        transport = quic_transport(NodeKey.generate())
        link = await transport.connect(decode_token(token).addresses[0])
        reader, writer = await link.protocol.create_stream()
        writer.write(DATA_STREAM + encode_frame({"type": "open", "purpose": "api"}) + encode_frame({"type": "generate"}))
        await asyncio.wait_for(link.protocol.closed.wait(), SETTLE)
        reason = link.protocol.close_reason
        await transport.stop()
        return reason

    assert asyncio.run(attack()) == "unexpected stream"
    assert_unharmed(founder, friend)


@pytest.mark.parametrize("purpose", ["shell", "rpc", 7])
def test_a_member_cannot_open_a_stream_it_has_no_use_for(node_factory, purpose):
    founder, friend, token, _ = honest_mesh(node_factory)

    async def attack():
        mallory = await Member.join(token)
        await mallory.say_name("mallory")
        await until(lambda: peer(founder, mallory.node_id), message="the founder to hold mallory")
        stream = await mallory.link.open_stream()
        await stream.send({"type": "open", "purpose": purpose})
        got = await read_until_closed(stream)
        still_linked = not mallory.closed.is_set()
        await mallory.say_name("mallory, after")  # the control link still carries gossip
        await until(lambda: (peer(founder, mallory.node_id) or {}).get("name") == "mallory, after",
                    message="mallory's gossip after the refused stream")
        await mallory.leave()
        return got, still_linked

    got, still_linked = asyncio.run(attack())
    assert got == [] and still_linked
    assert_unharmed(founder, friend)


def test_a_members_api_stream_is_served_like_its_tls_data_link(node_factory):
    founder, friend, token, _ = honest_mesh(node_factory)

    async def ask():
        mallory = await Member.join(token)
        stream = await mallory.link.open_stream()
        await stream.send({"type": "open", "purpose": "api"})
        await stream.send({"type": "generate", "request": {"model": "no-such-model", "messages": []}})
        got = await read_until_closed(stream)
        await mallory.leave()
        return got

    got = asyncio.run(ask())
    # the founder hosts nothing: its api side answers with an error event, not silence
    assert got and got[-1]["type"] == "error"
    assert_unharmed(founder, friend)
