"""A member that lies about the mesh's wants, over real QUIC against real nodes (the harness of
tests/test_mesh_gossip_attacks.py): malformed entries drop the sender and change nothing, and
a counter pushed to the top is refused, so it cannot freeze a model's entry for good."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from meshdesk.core.gossip_message import PROTOCOL_VERSION
from meshdesk.core.gossip_values import MAX_COUNTER
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.wants import WantEntry
from meshdesk.node.mesh_state import STATE_FILE
from tests.test_mesh_gossip_attacks import SETTLE, Member, assert_unharmed, honest_mesh, until

pytestmark = pytest.mark.slow

FROZEN = ModelAdvert("frozen.gguf", 1000, "f0" * 32, 4)
LATER = ModelAdvert("later.gguf", 1000, "1a" * 32, 4)


async def send_wants(mallory: Member, wants: list) -> None:
    await mallory.link.send({"type": "gossip", "v": PROTOCOL_VERSION, "records": [], "heartbeats": {},
                             "generations": {}, "entries": [], "authority": None, "wants": wants})


def saved_wants(node) -> dict[str, dict]:
    try:
        stored = json.loads((node.home / STATE_FILE).read_text())
    except (OSError, ValueError):  # being replaced
        return {}
    return {entry["advert"]["name"]: entry for entry in stored.get("wants", [])}


def test_a_want_at_the_top_of_the_counter_is_refused_and_a_fair_one_spreads(node_factory):
    founder, friend, token, _ = honest_mesh(node_factory)

    async def attack():
        mallory = await Member.join(token)
        now_ms = int(time.time() * 1000)
        await send_wants(mallory, [WantEntry(FROZEN, False, MAX_COUNTER, mallory.node_id).to_wire()])
        await send_wants(mallory, [WantEntry(LATER, True, now_ms, mallory.node_id).to_wire()])
        for node in (founder, friend):  # saved every few seconds, and on every change of our own
            await until(lambda: "later.gguf" in saved_wants(node), 3 * SETTLE, message="the fair want to spread")
        assert not mallory.closed.is_set()  # a counter too far ahead is left out, not a fault
        await mallory.leave()

    asyncio.run(attack())
    for node in (founder, friend):
        assert "frozen.gguf" not in saved_wants(node)
    assert_unharmed(founder, friend)


@pytest.mark.parametrize("change", [{"wanted": "yes"}, {"advert": {"name": "", "size": 1, "digest": "d"}}])
def test_a_malformed_want_drops_its_sender_and_changes_nothing(node_factory, change):
    founder, friend, token, _ = honest_mesh(node_factory)

    async def attack():
        mallory = await Member.join(token)
        good = WantEntry(LATER, True, int(time.time() * 1000), mallory.node_id).to_wire()
        await send_wants(mallory, [good, {**WantEntry(FROZEN, True, 1, mallory.node_id).to_wire(), **change}])
        await asyncio.wait_for(mallory.closed.wait(), SETTLE)  # the founder dropped us
        await mallory.leave()

    asyncio.run(attack())
    assert_unharmed(founder, friend)  # renames: gossip has flowed since the attack
    for node in (founder, friend):
        assert saved_wants(node) == {}  # not even the good entry of the malformed message
