"""A member that lies in gossip, over real QUIC against real nodes: the test joins a real
founder's mesh by invite (tests/mesh_tools.py), then sends forged gossip on its control link.
Each attack must fail, the victim keep running, and the honest mesh (founder and a friend,
both real processes) keep answering."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from meshdesk.adapters.node_keys import NodeKey
from meshdesk.core import authority
from meshdesk.core.authority import make_entry
from meshdesk.core.gossip_values import MAX_COUNTER
from meshdesk.core.identity import node_id_for
from meshdesk.core.invite import decode_token
from meshdesk.core.node_record import NodeRecord, signed
from meshdesk.node import handshake
from meshdesk.node.interfaces import LinkClosed
from meshdesk.node.mesh_state import STATE_FILE
from tests.mesh_tools import credentials, quic_transport

pytestmark = pytest.mark.slow

SETTLE = 10.0


class Member:
    """The test, joined as a member of a real node's mesh, on one control link."""

    def __init__(self, key: NodeKey, transport, link):
        self.key, self.transport, self.link = key, transport, link
        self.node_id = node_id_for(key.public_bytes)
        self.inbox: list[dict] = []
        self.closed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def join(cls, token_text: str) -> Member:
        key, token = NodeKey.generate(), decode_token(token_text)
        transport = quic_transport(key)
        link = await transport.connect(token.addresses[0])
        await handshake.dial(link, credentials(key, "mallory"), token.mesh_id, None, invite=token_text,
                             expected_node_key=token.inviter_key)
        return cls(key, transport, link)

    async def _read(self) -> None:
        try:
            while True:
                self.inbox.append(await self.link.receive())
        except (LinkClosed, ConnectionError, ValueError):
            self.closed.set()

    def record_of(self, node_id: str) -> dict | None:
        """The latest record the mesh has gossiped to us for `node_id`."""
        found = [r for m in self.inbox if m.get("type") == "gossip" for r in m["records"] if r["node_id"] == node_id]
        return max(found, key=lambda record: record["generation"], default=None)

    def own_record(self, name: str, generation: int) -> dict:
        record = NodeRecord(node_id=self.node_id, name=name, addresses=(), capacity_bytes=0, models=(),
                            serving=None, role="client", versions={}, rtt_ms={},
                            public_key=self.key.public_bytes.hex(), generation=generation)
        return signed(record, self.key.sign).to_wire()

    async def gossip(self, records=(), entries=(), heartbeats=None, generations=None) -> None:
        await self.link.send({"type": "gossip", "v": 4, "records": list(records), "heartbeats": heartbeats or {},
                              "generations": generations or {}, "entries": list(entries), "authority": None,
                              "wants": []})

    async def say_name(self, name: str) -> None:
        """A valid record of our own: once the node shows `name`, it has read all we sent before."""
        await self.gossip([self.own_record(name, int(time.time() * 1000))])

    async def leave(self) -> None:
        self.reader.cancel()
        self.link.close("done")
        await self.transport.stop()


async def until(condition, timeout: float = SETTLE, message: str = "condition"):
    """Polls `condition` (run in a thread: it may make blocking HTTP calls) with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.05)


def peer(node, node_id: str) -> dict | None:
    return next((p for p in node.status()["peers"] if p["id"] == node_id and p["state"] == "alive"), None)


def honest_mesh(node_factory):
    founder = node_factory("--client")
    token = founder.invite_token()
    friend = node_factory("--client", "--join", token)
    ids = founder.node_id, friend.node_id
    deadline = time.monotonic() + SETTLE
    while not (peer(founder, ids[1]) and peer(friend, ids[0])):
        assert time.monotonic() < deadline, "the founder and its friend did not link up"
        time.sleep(0.05)
    return founder, friend, token, ids


def assert_unharmed(founder, friend) -> None:
    """Both processes run, see each other, and a change on either reaches the other."""
    assert founder.process.poll() is None and friend.process.poll() is None
    for node, other, name in ((founder, friend, "founder, renamed"), (friend, founder, "friend, renamed")):
        status, _ = node.post_json("/api/name", {"name": name})
        assert status == 200
        deadline = time.monotonic() + SETTLE
        while (peer(other, node.node_id) or {}).get("name") != name:
            assert time.monotonic() < deadline, f"{name!r} did not reach the other node"
            time.sleep(0.05)
    assert not founder.status()["mesh"]["removed_from_mesh"] and not friend.status()["mesh"]["removed_from_mesh"]


def test_a_record_forged_for_another_member_is_refused_and_its_sender_dropped(node_factory):
    founder, friend, token, (founder_id, friend_id) = honest_mesh(node_factory)
    original = peer(founder, friend_id)

    async def attack():
        mallory = await Member.join(token)
        await until(lambda: mallory.record_of(friend_id), message="the friend's record to reach mallory")
        forged = NodeRecord.from_wire({**mallory.record_of(friend_id), "name": "mallory as the friend",
                                       "addresses": [["127.0.0.1", 9]], "generation": MAX_COUNTER - 1,
                                       "public_key": mallory.key.public_bytes.hex()})
        await mallory.gossip([signed(forged, mallory.key.sign).to_wire()])
        await asyncio.wait_for(mallory.closed.wait(), SETTLE)  # the founder dropped us
        await mallory.leave()

    asyncio.run(attack())
    now = peer(founder, friend_id)
    assert now["name"] == original["name"] and now["addresses"] == original["addresses"]
    assert "mallory as the friend" not in json.dumps(friend.status())
    assert_unharmed(founder, friend)


def test_generations_at_the_top_freeze_nothing(node_factory):
    founder, friend, token, (founder_id, friend_id) = honest_mesh(node_factory)

    async def attack():
        mallory = await Member.join(token)
        # Our own, validly signed record at 2^63-1, and claims that the founder is there too.
        # (Not the friend's heartbeat: heartbeats are unsigned, see docs/decisions.md.)
        await mallory.gossip([mallory.own_record("frozen", MAX_COUNTER)], heartbeats={founder_id: MAX_COUNTER},
                             generations={founder_id: MAX_COUNTER, friend_id: MAX_COUNTER})
        await mallory.say_name("mallory, restarted")  # a restart with a wall-clock generation wins
        await until(lambda: (peer(founder, mallory.node_id) or {}).get("name") == "mallory, restarted",
                    message="mallory's honest record to replace the one at the top")
        assert not mallory.closed.is_set()
        await mallory.leave()

    asyncio.run(attack())
    assert_unharmed(founder, friend)


def test_a_member_cannot_remove_the_founder_or_anyone(node_factory):
    founder, friend, token, (founder_id, friend_id) = honest_mesh(node_factory)

    async def attack():
        mallory = await Member.join(token)
        key = mallory.key.public_bytes
        entries = [make_entry(authority.REMOVE, node_id, key, 1, mallory.key.sign).to_wire()
                   for node_id in (founder_id, friend_id)]
        entries.append(make_entry(authority.ADMIN, key.hex(), key, 1, mallory.key.sign).to_wire())
        await mallory.gossip(entries=entries)
        await mallory.say_name("mallory, after")
        await until(lambda: (peer(founder, mallory.node_id) or {}).get("name") == "mallory, after",
                    message="the founder to read mallory's entries")
        await mallory.leave()

    asyncio.run(attack())
    assert json.loads((founder.home / STATE_FILE).read_text())["removed"] == []
    assert_unharmed(founder, friend)


def test_a_flood_of_removals_does_not_use_up_the_founders_room(node_factory):
    founder, friend, token, (founder_id, friend_id) = honest_mesh(node_factory)

    async def attack():
        mallory = await Member.join(token)
        key = mallory.key.public_bytes
        bogus = [make_entry(authority.REMOVE, f"{index:020x}", key, 1, mallory.key.sign).to_wire()
                 for index in range(4096)]
        for start in range(0, len(bogus), 1024):
            await mallory.gossip(entries=bogus[start:start + 1024])
        await mallory.say_name("mallory, flooded")
        await until(lambda: (peer(founder, mallory.node_id) or {}).get("name") == "mallory, flooded",
                    message="the founder to read the flood")
        # The founder can still revoke, and remove the flooder.
        invite = founder.post_json("/api/invite", {"expires_in": 3600})[1]["token"]
        assert founder.post_json("/api/revoke", {"token": invite})[0] == 200
        assert founder.post_json("/api/remove", {"node_id": mallory.node_id})[0] == 200
        await asyncio.wait_for(mallory.closed.wait(), SETTLE)
        await mallory.leave()
        return invite

    invite = asyncio.run(attack())
    memory = json.loads((founder.home / STATE_FILE).read_text())
    assert decode_token(invite).token_id in memory["revoked"] and len(memory["removed"]) == 1
    assert_unharmed(founder, friend)


def test_records_too_large_for_one_frame_together_still_reach_a_new_member(node_factory):
    founder, friend, token, (founder_id, friend_id) = honest_mesh(node_factory)
    bulky = {"notes": ["x" * 1000] * 300}  # about 300 kB: four make the full state over a frame

    async def attack():
        mallory = await Member.join(token)
        others = [NodeKey.generate() for _ in range(4)]  # keys mallory made up: valid records each
        for key in others:
            record = NodeRecord(node_id=node_id_for(key.public_bytes), name="bulky", addresses=(), capacity_bytes=0,
                                models=(), serving=None, role="client", versions=bulky, rtt_ms={},
                                public_key=key.public_bytes.hex(), generation=int(time.time() * 1000))
            await mallory.gossip([signed(record, key.sign).to_wire()])
        await until(lambda: sum(p["name"] == "bulky" for p in founder.status()["peers"]) == 4,
                    message="the founder to hold the bulky records")
        await mallory.leave()

    asyncio.run(attack())
    newcomer = node_factory("--client", "--join", token)
    deadline = time.monotonic() + SETTLE
    while not (peer(newcomer, founder_id) and peer(newcomer, friend_id)):
        assert time.monotonic() < deadline, "the newcomer never got the full state"
        time.sleep(0.05)
    assert_unharmed(founder, friend)


def test_a_member_that_is_no_admin_is_told_it_cannot_remove_or_revoke(node_factory):
    from tests.nodes import run_meshdesk

    founder, friend, token, (founder_id, friend_id) = honest_mesh(node_factory)
    for arguments, reason in ((["remove", founder_id], "the mesh's founder cannot be removed"),
                              (["revoke", token], "only the mesh's founder and the admins it names can")):
        result = run_meshdesk(*arguments, "--home", str(friend.home))
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert reason in result.stderr.splitlines()[-1], result.stderr
    assert friend.post_json("/api/revoke", {"token": token})[0] == 400
    assert_unharmed(founder, friend)


def test_offline_revocations_are_for_the_founder_and_apply_at_its_next_start(node_factory):
    from tests.nodes import run_meshdesk

    founder, friend, token, (founder_id, friend_id) = honest_mesh(node_factory)
    friend.stop()
    founder.stop()
    result = run_meshdesk("revoke", token, "--home", str(friend.home))
    assert result.returncode != 0 and "only the mesh's founder" in result.stderr, result.stderr
    assert json.loads((friend.home / STATE_FILE).read_text())["revoked"] == []
    result = run_meshdesk("revoke", token, "--home", str(founder.home))
    assert result.returncode == 0, result.stderr
    again = node_factory("--client", home=founder.home)
    again.printed("Resumed mesh")
    token_id = decode_token(token).token_id

    def revoked_by_entry():
        memory = json.loads((founder.home / STATE_FILE).read_text())
        return any(e["kind"] == "revoke" and e["subject"] == token_id for e in memory["entries"])

    deadline = time.monotonic() + SETTLE
    while not revoked_by_entry():
        assert time.monotonic() < deadline, "the offline revocation was not applied"
        time.sleep(0.05)
