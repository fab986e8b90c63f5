"""Attacks before authentication, over real sockets on a real node: floods from one address,
slow handshakes, oversized frame headers and QUIC first packets that never answer. Each is cut
off or capped (core/preauth.py and the transports) while an honest peer still links."""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from meshdesk.adapters.node_keys import NodeKey
from meshdesk.adapters.quic.transport import ALPN, MeshQuicProtocol
from meshdesk.core.invite import decode_token
from meshdesk.core.preauth import PER_ADDRESS, PRE_AUTH_SECONDS
from tests.mesh_tools import tls_transport
from tests.nodes import poll
from tests.test_transport_security import dial_data_plane, member_of

pytestmark = pytest.mark.slow


def open_idle_tcp(source: str, address, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        connection = socket.socket()
        connection.bind((source, 0))
        connection.connect(address)
        sockets.append(connection)
    return sockets


def hung_up(connections: list[socket.socket], within: float) -> list[socket.socket]:
    """Those of `connections` the other end closed within `within` seconds (all watched at once)."""
    closed, deadline = [], time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([c for c in connections if c not in closed], [], [], left)
        for connection in readable:
            try:
                data = connection.recv(1)
            except ConnectionResetError:
                data = b""
            if data == b"":
                closed.append(connection)
        if not readable:
            break
    return closed


def test_a_flood_of_connections_from_one_address_gets_a_few_places_and_the_honest_peer_links(node_factory):
    founder = node_factory("--client")
    mesh_id, secret, founder_key, address = member_of(founder)
    flood = open_idle_tcp("127.0.0.2", address, PER_ADDRESS + 12)
    try:
        refused = hung_up(flood, 1.0)
        assert len(refused) == 12  # beyond its places, dropped at once, before any TLS
        # While the flood holds its places, an honest member from another address links on both planes.
        assert asyncio.run(dial_data_plane(NodeKey.generate(), address, mesh_id, secret, founder_key))
        friend = node_factory("--client", "--join", founder.invite_token())
        poll(lambda: friend.node_id in founder.peer_ids(), 10, message="the friend to link")
    finally:
        for connection in flood:
            connection.close()


async def quic_connects(source: str, address, timeout: float) -> MeshQuicProtocol | None:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
    configuration.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: MeshQuicProtocol(QuicConnection(configuration=configuration)), local_addr=(source, 0))
    protocol.connect(address)
    try:
        await asyncio.wait_for(protocol.wait_connected(), timeout)
    except (asyncio.TimeoutError, ConnectionError):
        protocol._transport.close()
        return None
    return protocol


def test_a_quic_flood_from_one_address_is_capped_and_silent_connections_are_cut_off(node_factory):
    founder = node_factory("--client")
    address = tuple(decode_token(founder.invite_token()).addresses[0])

    async def flood():
        started = time.monotonic()
        protocols = await asyncio.gather(*(quic_connects("127.0.0.2", address, 2.0)
                                           for _ in range(PER_ADDRESS + 4)))
        connected = [protocol for protocol in protocols if protocol is not None]
        assert len(connected) == PER_ADDRESS  # the rest got no answer at all
        # None of them opens a control stream: each is closed once its pre-auth time is up.
        await asyncio.wait_for(asyncio.gather(*(p.closed.wait() for p in connected)), PRE_AUTH_SECONDS + 3)
        assert time.monotonic() - started < PRE_AUTH_SECONDS + 3
        for protocol in connected:
            protocol._transport.close()

    asyncio.run(flood())
    joiner = node_factory("--client", "--join", founder.invite_token())
    poll(lambda: joiner.node_id in founder.peer_ids(), 10, message="an honest node to join")


def test_a_slow_loris_handshake_is_cut_off_and_the_mesh_still_answers(node_factory):
    founder = node_factory("--client")
    mesh_id, secret, founder_key, address = member_of(founder)

    async def trickle() -> tuple[float, int]:
        link = await tls_transport(NodeKey.generate()).connect(address)
        frame = (2000).to_bytes(4, "big")  # a frame header, then its body a byte at a time
        started, sent = time.monotonic(), 0
        link.writer.write(frame)
        try:
            while time.monotonic() - started < 15:
                link.writer.write(b" ")
                await link.writer.drain()
                sent += 1
                try:
                    if await asyncio.wait_for(link.reader.read(1), 0.25) == b"":
                        break  # the node hung up
                except asyncio.TimeoutError:
                    continue  # still open: one more byte
        except ConnectionError:
            pass
        finally:
            link.close()
        return time.monotonic() - started, sent

    async def bare_tcp() -> float:
        reader, writer = await asyncio.open_connection(*address)  # never starts TLS
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 15) == b""
        writer.close()
        return time.monotonic() - started

    async def both():
        return await asyncio.gather(trickle(), bare_tcp())

    (trickled_for, sent), silent_for = asyncio.run(both())
    assert PRE_AUTH_SECONDS - 1 < trickled_for < PRE_AUTH_SECONDS + 2 and sent > 10
    assert PRE_AUTH_SECONDS - 1 < silent_for < PRE_AUTH_SECONDS + 2
    assert asyncio.run(dial_data_plane(NodeKey.generate(), address, mesh_id, secret, founder_key))


def test_a_large_frame_header_before_authentication_is_refused_without_buffering(node_factory):
    """Within the post-authentication frame limit (1 MiB) but far above what a hello needs."""
    founder = node_factory("--client")
    mesh_id, secret, founder_key, address = member_of(founder)

    async def announce() -> float:
        link = await tls_transport(NodeKey.generate()).connect(address)
        started = time.monotonic()
        link.writer.write((500_000).to_bytes(4, "big") + b"{" * 1000)
        await link.writer.drain()
        assert await asyncio.wait_for(link.reader.read(), 10) == b""
        link.close()
        return time.monotonic() - started

    assert asyncio.run(announce()) < PRE_AUTH_SECONDS - 2  # dropped on the header (and a 1 s linger)
    assert "data plane" in " ".join(refusal["reason"] for refusal in founder.status()["refusals"])
    assert asyncio.run(dial_data_plane(NodeKey.generate(), address, mesh_id, secret, founder_key))


def test_quic_first_packets_that_never_answer_take_no_places(node_factory):
    """As from forged source addresses: each Initial is answered with a Retry, which nobody
    reads, so they hold no state and no place, and a real client from that address connects."""
    founder = node_factory("--client")
    address = tuple(decode_token(founder.invite_token()).addresses[0])

    async def forge_then_connect():
        configuration = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.3", 0))
            for _ in range(PER_ADDRESS * 3):
                connection = QuicConnection(configuration=configuration)
                connection.connect(address, now=time.monotonic())
                for datagram, _ in connection.datagrams_to_send(now=time.monotonic()):
                    udp.sendto(datagram, address)
            protocol = await quic_connects("127.0.0.3", address, 3.0)
        assert protocol is not None
        protocol.close()
        protocol._transport.close()

    asyncio.run(forge_then_connect())


def test_a_flood_from_many_addresses_meets_the_total_cap_and_the_mesh_recovers(node_factory):
    from meshdesk.core.preauth import TOTAL

    founder = node_factory("--client")
    mesh_id, secret, founder_key, address = member_of(founder)
    sources = [f"127.0.1.{number}" for number in range(1, TOTAL // PER_ADDRESS + 2)]
    flood = [connection for source in sources for connection in open_idle_tcp(source, address, PER_ADDRESS)]
    try:
        dropped = hung_up(flood, 1.0)
        assert len(dropped) == len(flood) - TOTAL  # all the places are taken
        waiting = [connection for connection in flood if connection not in dropped]
        assert len(hung_up(waiting, PRE_AUTH_SECONDS + 2)) == TOTAL  # then each is cut off
        assert asyncio.run(dial_data_plane(NodeKey.generate(), address, mesh_id, secret, founder_key))
    finally:
        for connection in flood:
            connection.close()
