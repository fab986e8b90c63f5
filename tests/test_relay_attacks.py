"""Attacks on a relay (`node.relay_server`), through real sockets on loopback; in each, the
honest node's registration and traffic go on unharmed.

- Taking someone's registration: a registration that names the victim's key without its
  signature is refused, and the victim keeps its port.
- Hijacking a session: a stranger that finds a session port and sends to it, or claims it
  with a guessed token, gets nothing forwarded, and the node's traffic is not sent its way.
- Bad control messages (garbage, an oversized frame, an unknown message) drop only their
  connection, and a flood of sessions from one address is capped while another gets one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.core import relay_protocol as rp
from meshdesk.core.frames import encode_frame
from meshdesk.core.identity import node_id_for
from meshdesk.node.relay_client import RelayClient
from meshdesk.node.relay_server import FramedMessages, RelayLimits, RelayServer

WAIT = 5.0


class Udp:
    """A UDP socket on loopback (`host`: which 127/8 address it sends from)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((host, 0))
        self.socket.setblocking(False)
        self.address = self.socket.getsockname()

    def send(self, address, data: bytes) -> bool:
        self.socket.sendto(data, tuple(address))
        return True

    async def receive(self, timeout: float = WAIT) -> tuple[bytes, tuple]:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(self.socket, 65535), timeout)

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.receive(seconds)
        except TimeoutError:
            return True
        return False


async def registered_node(relay_port: int, key: NodeKey | None = None):
    """A node's mesh socket and its client, registered at the relay."""
    key = key or NodeKey.generate()
    mesh_socket = Udp()
    changed = asyncio.Event()
    client = RelayClient(("127.0.0.1", relay_port), key.public_bytes, key.sign, mesh_socket.send, changed.set)
    client.start()
    await asyncio.wait_for(changed.wait(), WAIT)
    return mesh_socket, client


async def exchange(source: Udp, node: Udp, relayed_address, text: bytes) -> tuple:
    """A datagram each way through the relay; returns where each side saw the other."""
    source.send(relayed_address, b"to node " + text)
    data, node_sees = await node.receive()
    assert data == b"to node " + text
    node.send(node_sees, b"to source " + text)
    data, source_sees = await source.receive()
    assert data == b"to source " + text
    return node_sees, source_sees


def with_relay(body):
    """Runs `await body(relay)` against a fresh relay on loopback, in a loop of its own."""
    async def main():
        server = RelayServer(verify_signature, "127.0.0.1", 0, limits=RelayLimits(sessions_per_source=3))
        await server.start()
        try:
            await body(server)
        finally:
            await server.stop()
    asyncio.run(main())


async def control_connection(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    messages = FramedMessages(reader)
    nonce = rp.read_challenge(await asyncio.wait_for(messages.next(), WAIT))
    return messages, writer, nonce


def test_a_registration_without_the_keys_signature_is_refused_and_the_owner_keeps_its_port():
    async def body(relay):
        victim = NodeKey.generate()
        node, client = await registered_node(relay.port, victim)
        messages, writer, nonce = await control_connection(relay.port)
        forged = rp.register(victim.public_bytes, NodeKey.generate().sign(rp.registration_bytes(nonce)))
        writer.write(encode_frame(forged))
        reply = await asyncio.wait_for(messages.next(), WAIT)
        assert reply["type"] == "refused" and "not signed" in reply["reason"]
        replayed_nonce = rp.register(victim.public_bytes, victim.sign(rp.registration_bytes(b"\0" * rp.NONCE_BYTES)))
        messages, writer, _ = await control_connection(relay.port)
        writer.write(encode_frame(replayed_nonce))  # a signature for another challenge
        assert (await asyncio.wait_for(messages.next(), WAIT))["type"] == "refused"
        await exchange(Udp(), node, client.relayed_address, b"after the forgeries")
        await client.stop()
    with_relay(body)


def test_a_stranger_at_a_session_port_gets_nothing_and_diverts_nothing():
    async def body(relay):
        node, client = await registered_node(relay.port)
        source, stranger = Udp(), Udp()
        session_address, _ = await exchange(source, node, client.relayed_address, b"first")
        stranger.send(session_address, b"let me in")
        stranger.send(session_address, rp.claim_datagram(b"\x01" * rp.TOKEN_BYTES))  # a guessed token
        assert await source.nothing_within(0.3)  # the stranger's datagram went nowhere
        node_sees, source_sees = await exchange(source, node, client.relayed_address, b"second")
        assert node_sees == session_address and source_sees == client.relayed_address
        assert await stranger.nothing_within(0.3)  # the node's traffic still goes to the node alone
        await client.stop()
    with_relay(body)


@pytest.mark.parametrize("attack", [b"\xff" * 64, struct.pack(">I", 1 << 30) + b"x",
                                    encode_frame({"type": "register", "public_key": "zz", "signature": "00"})])
def test_garbage_on_a_control_connection_drops_only_it(attack):
    async def body(relay):
        node, client = await registered_node(relay.port)
        messages, writer, _ = await control_connection(relay.port)
        writer.write(attack)
        with pytest.raises((ConnectionError, rp.RelayProtocolError)):
            while (await asyncio.wait_for(messages.next(), WAIT))["type"] == "refused":
                pass
        await exchange(Udp(), node, client.relayed_address, b"still relayed")
        assert len(relay.registrations) == 1
        await client.stop()
    with_relay(body)


def test_an_unknown_message_after_registering_drops_that_registration_only():
    async def body(relay):
        honest_node, honest = await registered_node(relay.port)
        key = NodeKey.generate()
        messages, writer, nonce = await control_connection(relay.port)
        writer.write(encode_frame(rp.register(key.public_bytes, key.sign(rp.registration_bytes(nonce)))))
        assert (await asyncio.wait_for(messages.next(), WAIT))["type"] == "registered"
        writer.write(encode_frame({"type": "session", "port": 1, "token": "00" * 16}))  # not the node's to say
        with pytest.raises((ConnectionError, rp.RelayProtocolError)):
            while True:
                await asyncio.wait_for(messages.next(), WAIT)
        assert list(relay.registrations) == [node_id_for(honest.public_key)]
        await exchange(Udp(), honest_node, honest.relayed_address, b"unharmed")
        await honest.stop()
    with_relay(body)


def test_one_address_opening_session_after_session_is_capped_and_another_still_gets_one():
    async def body(relay):
        node, client = await registered_node(relay.port)
        flood = [Udp("127.0.0.1") for _ in range(10)]
        for sender in flood:
            sender.send(client.relayed_address, b"open a session")
        await asyncio.sleep(0)  # let the relay read them
        deadline = asyncio.get_running_loop().time() + WAIT
        while len(relay.registrations[next(iter(relay.registrations))].sessions) < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        for _ in range(3):  # the node hears each capped session's first datagram once it claims it
            assert (await node.receive())[0] == b"open a session"
        honest_source = Udp("127.0.0.2")
        await exchange(honest_source, node, client.relayed_address, b"from elsewhere")
        assert relay.session_count() == 4  # three from the flood's address, one from the other
        await client.stop()
    with_relay(body)


def open_udp_sockets() -> int:
    """UDP sockets this process holds (the relay's ports among them)."""
    ours = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    with open("/proc/net/udp") as table:
        inodes = {line.split()[9] for line in table.readlines()[1:]}
    return len(ours & inodes)


def test_racing_registrations_count_against_the_limits_and_leave_no_socket_behind():
    async def body(relay):
        baseline = open_udp_sockets()
        key = NodeKey.generate()

        async def register(with_key: NodeKey):
            messages, writer, nonce = await control_connection(relay.port)
            writer.write(encode_frame(rp.register(with_key.public_bytes, with_key.sign(rp.registration_bytes(nonce)))))
            reply = await asyncio.wait_for(messages.next(), WAIT)
            return reply["type"], writer
        same = await asyncio.gather(*(register(key) for _ in range(20)), return_exceptions=True)
        strangers = await asyncio.gather(*(register(NodeKey.generate()) for _ in range(20)), return_exceptions=True)
        assert len(relay.registrations) <= relay.limits.registrations_per_address
        assert sum(1 for outcome in strangers if not isinstance(outcome, BaseException) and outcome[0] == "registered") \
            <= relay.limits.registrations_per_address
        for outcome in same + strangers:
            if not isinstance(outcome, BaseException):
                outcome[1].close()
        deadline = asyncio.get_running_loop().time() + WAIT
        while relay.registrations or open_udp_sockets() > baseline:
            assert asyncio.get_running_loop().time() < deadline, (relay.registrations, open_udp_sockets(), baseline)
            await asyncio.sleep(0.02)
    with_relay(body)


def test_a_registered_stranger_that_never_reads_its_pongs_is_cut_off():
    async def body(relay):
        honest_node, honest = await registered_node(relay.port)
        key = NodeKey.generate()
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", relay.port))
        reader, writer = await asyncio.open_connection(sock=raw)
        messages = FramedMessages(reader)
        nonce = rp.read_challenge(await asyncio.wait_for(messages.next(), WAIT))
        writer.write(encode_frame(rp.register(key.public_bytes, key.sign(rp.registration_bytes(nonce)))))
        assert (await asyncio.wait_for(messages.next(), WAIT))["type"] == "registered"
        reader._transport.pause_reading()  # from now on, read nothing the relay sends
        pings = encode_frame({"type": "ping"}) * 2000
        stranger = node_id_for(key.public_bytes)
        for _ in range(2000):
            if stranger not in relay.registrations:
                break
            writer.write(pings)
            try:
                await asyncio.wait_for(writer.drain(), 1)
            except (ConnectionError, TimeoutError):
                break
        deadline = asyncio.get_running_loop().time() + WAIT
        while stranger in relay.registrations:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        await exchange(Udp(), honest_node, honest.relayed_address, b"unharmed")
        await honest.stop()
    with_relay(body)


def test_a_session_its_node_stopped_answering_closes_and_the_next_datagram_opens_a_new_one():
    async def main():
        relay = RelayServer(verify_signature, "127.0.0.1", 0, limits=RelayLimits(session_idle_seconds=0.5))
        await relay.start()
        try:
            node, client = await registered_node(relay.port)
            source = Udp()
            first, _ = await exchange(source, node, client.relayed_address, b"answered once")
            deadline = asyncio.get_running_loop().time() + WAIT
            while True:  # the node's router forgot the mapping: the source's datagrams go unanswered
                source.send(client.relayed_address, b"anyone?")
                data, at = await node.receive()
                if at != first:
                    break  # a new session, claimed afresh
                assert asyncio.get_running_loop().time() < deadline, "the stale session never closed"
                await asyncio.sleep(0.1)
            assert len(client.sessions) == 2
            await client.stop()
        finally:
            await relay.stop()
    asyncio.run(main())


def test_oversized_datagrams_and_a_replayed_claim_change_nothing():
    async def body(relay):
        node, client = await registered_node(relay.port)
        source, stranger = Udp(), Udp()
        session_address, _ = await exchange(source, node, client.relayed_address, b"first")
        source.send(client.relayed_address, b"x" * 4000)
        assert await node.nothing_within(0.3)  # no member's QUIC packet is that large
        registration = next(iter(relay.registrations.values()))
        token = registration.sessions[source.address].token  # seen on the path, say
        stranger.send(session_address, rp.claim_datagram(token))
        await exchange(source, node, client.relayed_address, b"still the node's")
        assert await stranger.nothing_within(0.3)
        await client.stop()
    with_relay(body)


def test_a_nodes_sessions_full_of_unanswered_garbage_still_take_a_real_dial():
    async def main():
        relay = RelayServer(verify_signature, "127.0.0.1", 0, limits=RelayLimits(sessions_per_node=4))
        await relay.start()
        try:
            node, client = await registered_node(relay.port)
            for host in ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
                Udp(host).send(client.relayed_address, b"garbage the node never answers")
            for _ in range(4):
                await node.receive()
            await exchange(Udp("127.0.0.7"), node, client.relayed_address, b"a real dial")
            await client.stop()
        finally:
            await relay.stop()
    asyncio.run(main())


def test_a_members_relay_refuses_who_is_not_a_member():
    async def main():
        relay = RelayServer(verify_signature, "127.0.0.1", 0, allowed=lambda node_id: False)
        await relay.start()
        try:
            key = NodeKey.generate()
            messages, writer, nonce = await control_connection(relay.port)
            writer.write(encode_frame(rp.register(key.public_bytes, key.sign(rp.registration_bytes(nonce)))))
            reply = await asyncio.wait_for(messages.next(), WAIT)
            assert reply["type"] == "refused" and "members" in reply["reason"] and not relay.registrations
        finally:
            await relay.stop()
    asyncio.run(main())
