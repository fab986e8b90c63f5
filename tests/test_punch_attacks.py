"""A lying rendezvous, over real QUIC against real nodes (loopback): a member that tells the
founder to punch towards another member at an address of its choosing.

Mallory joins by invite, and so does her ghost, a second identity that leaves its link at once;
Mallory keeps the ghost alive in the founder's eyes by relaying its heartbeats (they are
unsigned, docs/decisions.md). So the ghost is a member the founder holds alive and has no link
to, which is what a punch is for. Mallory then tells the founder, again and again, that the
ghost is at a trap's address. The trap, a QUIC listener with a key of its own, gets one dial
per PUNCH_GAP and not one message of the founder's: the dial expected the ghost's key and hung
up before its hello. The founder and its friend go on, unharmed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from meshdesk.adapters.node_keys import NodeKey
from meshdesk.core import hole_punch
from tests.mesh_tools import quic_transport, record_messages
from tests.test_mesh_gossip_attacks import Member, assert_unharmed, honest_mesh, peer, until

pytestmark = pytest.mark.slow

LIES = 12  # one every 0.25 s: 3 s of lying, inside one PUNCH_GAP


class Trap:
    """A QUIC listener that counts the connections made to it (each one's QUIC handshake began)
    and records whatever arrives on their control streams."""

    def __init__(self):
        self.transport = quic_transport(NodeKey.generate())
        self.connections = 0
        self.messages: list[dict] = []
        make_protocol = self.transport._server_protocol

        def counted(*arguments, **options):
            self.connections += 1
            return make_protocol(*arguments, **options)
        self.transport._server_protocol = counted

    async def start(self) -> tuple[str, int]:
        return "127.0.0.1", await self.transport.start("127.0.0.1", 0, self._accepted)

    async def _accepted(self, link) -> None:
        await record_messages(link, self.messages)


async def keep_alive(mallory: Member, ghost_id: str, stop: asyncio.Event) -> None:
    """Mallory relays ever-growing heartbeats for the ghost."""
    count = 10_000
    while not stop.is_set():
        count += 1
        await mallory.gossip(heartbeats={ghost_id: count})
        try:
            await asyncio.wait_for(stop.wait(), 0.3)
        except TimeoutError:
            pass


def test_a_rendezvous_pointing_at_a_trap_gets_one_dial_per_gap_and_the_trap_learns_nothing(node_factory):
    founder, friend, token, _ = honest_mesh(node_factory)

    async def attack():
        trap = Trap()
        trap_address = await trap.start()
        mallory = await Member.join(token)
        await mallory.say_name("mallory")
        ghost = await Member.join(token)
        await ghost.say_name("ghost")
        await until(lambda: peer(founder, ghost.node_id), message="the founder to hold the ghost")
        await ghost.leave()
        stop = asyncio.Event()
        relaying = asyncio.ensure_future(keep_alive(mallory, ghost.node_id, stop))
        await until(lambda: (peer(founder, ghost.node_id) or {}).get("linked") is False,
                    message="the ghost alive in the founder's eyes, and unlinked")
        started = time.monotonic()
        for _ in range(LIES):
            await mallory.link.send(hole_punch.introduction(ghost.node_id, trap_address))
            await asyncio.sleep(0.25)  # paced lies, not synchronisation: the trap is polled below
        await until(lambda: trap.connections >= 1, message="the founder's dial at the trap")
        lying_seconds = time.monotonic() - started
        stop.set()
        await relaying
        still_linked = not mallory.closed.is_set()
        await mallory.leave()
        await trap.transport.stop()
        return trap, lying_seconds, still_linked

    trap, lying_seconds, still_linked = asyncio.run(attack())
    assert trap.connections == 1  # twelve lies, one dial: the gap per member holds
    assert lying_seconds < hole_punch.PUNCH_GAP  # (and the lies all came within one gap)
    assert trap.messages == []    # not even a hello: the key was not the ghost's
    assert still_linked           # a well-formed lie is not a protocol error; it just gets nothing
    assert_unharmed(founder, friend)
