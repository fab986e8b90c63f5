"""A test process acting as a mesh peer of a real node: misbehaving after authenticating."""

from __future__ import annotations

import asyncio
import struct

import pytest

from meshdesk.adapters.node_keys import NodeKey
from meshdesk.core.handshake import HandshakeError
from meshdesk.core.invite import decode_token
from meshdesk.node import handshake
from meshdesk.node.interfaces import LinkClosed
from tests.mesh_tools import credentials, quic_transport, tls_transport
from tests.nodes import poll

pytestmark = pytest.mark.slow


async def join_as_peer(token_text: str):
    token = decode_token(token_text)
    key = NodeKey.generate()
    transport = quic_transport(key)
    link = await transport.connect(token.addresses[0])
    identity = await handshake.dial(link, credentials(key), token.mesh_id, None, invite=token_text,
                                    expected_node_key=token.inviter_key)
    return key, transport, link, identity


def test_authenticated_peer_sending_garbage_is_dropped_alone(node_factory):
    founder = node_factory("--client")
    friend = node_factory("--client", "--join", founder.invite_token())
    poll(lambda: friend.node_id in founder.peer_ids(), 10, message="the friend to join")

    async def misbehave():
        key, transport, link, identity = await join_as_peer(founder.invite_token())
        assert identity.mesh_secret is not None
        peer_id = identity.hello.node_id
        await link.send({"type": "gossip", "v": 1, "records": "not a list"})
        with pytest.raises(LinkClosed):
            for _ in range(100):
                await asyncio.wait_for(link.receive(), 5)
        await transport.stop()
        return peer_id

    asyncio.run(misbehave())
    poll(lambda: len(founder.status()["peers"]) == 1, 10, message="the garbage peer to be dropped")
    assert founder.peer_ids() == {friend.node_id}
    assert founder.status()["api_port"] == founder.port


def test_data_plane_refuses_strangers_and_bad_frames(node_factory, tmp_path):
    founder = node_factory("--client")
    token = decode_token(founder.invite_token())
    address = token.addresses[0]

    async def probe():
        stranger = NodeKey.generate()
        transport = tls_transport(stranger, tmp_path / "stranger")
        link = await transport.connect(address)
        with pytest.raises(HandshakeError):  # a key and no mesh secret: refused
            await handshake.dial(link, credentials(stranger), token.mesh_id, b"\x00" * 32)
        link.close()

        link = await transport.connect(address)
        link.writer.write(struct.pack(">I", 1 << 30))  # a frame far larger than allowed
        await link.writer.drain()
        assert await asyncio.wait_for(link.reader.read(), 5) == b""
        link.close()

        link = await transport.connect(address)
        link.writer.write(b"\x00\x00\x00\x05{\"ty")  # truncated, then hang up
        link.close()

    asyncio.run(probe())
    refusals = " ".join(refusal["reason"] for refusal in founder.status()["refusals"])
    assert "data plane" in refusals
    assert founder.status()["mesh"]["members"] == 1
