"""A relay's sessions and registrations over time (`node.relay_server`, `node.relay_client`),
through real sockets on loopback: a session that carries traffic outlives the idle timeout
while an idle one closes, and a node registers again by itself when its relay restarts, at the
same port when the relay has a port range (so the relayed address in its invites still works)."""

from __future__ import annotations

import asyncio
import hashlib
import socket

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.core import relay_protocol as rp
from meshdesk.node.relay_server import RelayLimits, RelayServer
from tests.test_relay_attacks import WAIT, Udp, exchange, registered_node


async def until(condition, timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_busy_session_outlives_the_idle_timeout_and_an_idle_one_closes():
    async def main():
        relay = RelayServer(verify_signature, "127.0.0.1", 0, limits=RelayLimits(session_idle_seconds=0.6))
        await relay.start()
        try:
            node, client = await registered_node(relay.port)
            busy, idle = Udp(), Udp()
            await exchange(idle, node, client.relayed_address, b"once")
            started = asyncio.get_running_loop().time()
            while asyncio.get_running_loop().time() - started < 2.0:  # pings, as a link's are
                await exchange(busy, node, client.relayed_address, b"ping")
                await asyncio.sleep(0.1)
            sources = {session.source for registration in relay.registrations.values()
                       for session in registration.sessions.values()}
            assert busy.address in sources and idle.address not in sources
            await client.stop()
        finally:
            await relay.stop()
    asyncio.run(main())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_node_registers_again_when_its_relay_restarts_and_keeps_its_port_in_a_range():
    async def main():
        port = free_udp_port()
        first = RelayServer(verify_signature, "127.0.0.1", 0, ports=(port, port))
        await first.start()
        node, client = await registered_node(first.port, NodeKey.generate())
        assert client.relayed_address == ("127.0.0.1", port)
        await first.stop()
        await until(lambda: client.relayed_address is None)  # it noticed the relay went
        again = RelayServer(verify_signature, "127.0.0.1", first.port, ports=(port, port))
        await again.start()
        try:
            await until(lambda: client.relayed_address is not None, timeout=WAIT + rp.REGISTER_TIMEOUT)
            assert client.relayed_address == ("127.0.0.1", port)
            await client.stop()
        finally:
            await again.stop()
    asyncio.run(main())


def test_a_nodes_listening_port_is_the_same_for_its_id_and_spread_over_the_range():
    ports = {rp.preferred_port(hashlib.sha256(str(n).encode()).hexdigest()[:20], 40000, 40999, 0) for n in range(200)}
    assert all(40000 <= port <= 40999 for port in ports) and len(ports) > 150
    assert rp.preferred_port("ab" * 10, 40000, 40999, 0) == rp.preferred_port("ab" * 10, 40000, 40999, 0)
    assert rp.preferred_port("ab" * 10, 40000, 40999, 1) != rp.preferred_port("ab" * 10, 40000, 40999, 0)


def test_what_is_not_a_relay_of_ours_is_told_apart_clearly():
    import pytest

    for message, words in (({"type": "challenge", "version": 2, "nonce": "00" * 32}, "version 1"),
                           ({"type": "hello"}, "not a MeshDesk relay"),
                           ({"type": "challenge", "version": 1, "nonce": "AB" * 32}, "lower-case hex"),
                           ({"type": "challenge", "version": 1, "nonce": "00" * 8}, "32 bytes")):
        with pytest.raises(rp.RelayProtocolError, match=words):
            rp.read_challenge(message)
    for text, expected in (("0", None), ("40000-40999", (40000, 40999))):
        assert rp.parse_port_range(text) == expected
    for text in ("40999-40000", "80-90", "x-y", "40000", "40000-70000"):
        with pytest.raises(ValueError):
            rp.parse_port_range(text)
    assert rp.claimed_token(rp.claim_datagram(b"t" * rp.TOKEN_BYTES)) == b"t" * rp.TOKEN_BYTES
    assert rp.claimed_token(b"\xc0" + b"\0" * 40) is None  # a QUIC long-header packet is no claim
