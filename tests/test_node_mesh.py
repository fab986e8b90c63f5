"""MeshService against in-memory transports: the real handshake, peer control and gossip, with
links that are queues instead of sockets. No subprocesses, no sleeps: scenarios wait on
conditions with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os

import pytest

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.core.errors import Fault
from meshdesk.node import handshake
from meshdesk.node.handshake import Credentials
from meshdesk.node.mesh import JoinRefused, MeshService, MeshSettings
from meshdesk.node.mesh_secrets import rotated
from tests.fakes import eventually, link_pair, run

PORT = 9400


class MemorySecrets:
    backend = "memory"
    warning = None

    def __init__(self):
        self.values: dict[str, bytes] = {}

    def get(self, name: str) -> bytes | None:
        return self.values.get(name)

    def set(self, name: str, value: bytes) -> None:
        self.values[name] = value


class MemoryNetwork:
    """Where in-memory transports listen: (host, port, plane) -> transport."""

    def __init__(self):
        self.listeners: dict[tuple, MemoryTransport] = {}


class MemoryTransport:
    """A transport whose links are in-memory pairs; the acceptor's key stands in for its TLS key."""

    def __init__(self, network: MemoryNetwork, host: str, public_key: bytes, plane: str):
        self.network, self.host, self.public_key, self.plane = network, host, public_key, plane
        self.on_link = None
        self.tasks: set[asyncio.Task] = set()
        self.port: int | None = None

    async def start(self, bind_host: str, port: int, on_link) -> int:
        self.port, self.on_link = port or PORT, on_link
        self.network.listeners[(self.host, self.port, self.plane)] = self
        return self.port

    async def connect(self, address, timeout: float = 5.0):
        listener = self.network.listeners.get((address[0], address[1], self.plane))
        if listener is None:
            raise OSError(f"nothing listens at {address}")
        near, far = link_pair((f"{self.host}->{address[0]}", f"{address[0]}<-{self.host}"))
        for end in (near, far):
            end.plane, end.server_public_key = self.plane, listener.public_key
        near.remote_address, far.remote_address = tuple(address), (self.host, 50000)
        task = asyncio.ensure_future(listener.on_link(far))
        listener.tasks.add(task)
        task.add_done_callback(listener.tasks.discard)
        return near

    async def stop(self) -> None:
        self.network.listeners.pop((self.host, self.port, self.plane), None)
        for task in list(self.tasks):
            task.cancel()


def credentials(key: NodeKey, name: str) -> Credentials:
    return Credentials(key.public_bytes, key.sign, verify_signature, name, {"protocol": 1}, os.urandom)


class Member:
    """One MeshService on the in-memory network, with its run task."""

    hosts = (f"10.0.0.{index}" for index in itertools.count(1))

    def __init__(self, network: MemoryNetwork, home, name: str):
        home.mkdir(parents=True, exist_ok=True)
        self.network, self.home, self.name = network, home, name
        self.key = NodeKey.generate()
        self.host = next(Member.hosts)
        self.secrets = MemorySecrets()
        self.mesh = self.new_mesh()
        self.task: asyncio.Task | None = None

    def new_mesh(self) -> MeshService:
        """This member's mesh service; called again, the same node restarted (key, home, secrets)."""
        return MeshService(
            MeshSettings(home=self.home, advertise_hosts=[self.host]), credentials(self.key, self.name),
            self.secrets, MemoryTransport(self.network, self.host, self.key.public_bytes, "quic"),
            MemoryTransport(self.network, self.host, self.key.public_bytes, "tls"), self.own_record)

    def own_record(self) -> dict:
        return {"name": "member", "capacity_bytes": 2**30, "models": (), "serving": None,
                "role": "standby", "versions": {"protocol": 1}}

    async def start(self, token=None) -> None:
        await self.mesh.bind()
        if token is None:
            self.mesh.load_or_create_mesh()
        else:
            assert await self.mesh.join(token)
        self.task = asyncio.ensure_future(self.mesh.run())

    def sees(self) -> set[str]:
        return {record.node_id for record in self.mesh.alive_records()} - {self.mesh.node_id}

    def linked(self) -> set[str]:
        return set(self.mesh.control.linked_peers())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.mesh.leave()


@pytest.fixture
def network():
    return MemoryNetwork()


async def three_members(network, tmp_path):
    founder = Member(network, tmp_path / "a", "founder")
    await founder.start()
    joiners = [Member(network, tmp_path / name, name) for name in ("b", "c")]
    for joiner in joiners:
        await joiner.start(founder.mesh.mint_invite(3600))
    members = [founder, *joiners]
    ids = {member.mesh.node_id for member in members}
    await eventually(lambda: all(m.linked() == ids - {m.mesh.node_id} for m in members), timeout=5.0)
    return members


def test_joiners_link_with_each_other_and_everyone_sees_everyone(network, tmp_path):
    async def scenario():
        members = await three_members(network, tmp_path)
        ids = {member.mesh.node_id for member in members}
        # Linked first, then each other's records by gossip: a loaded machine shows the gap.
        await eventually(lambda: all(member.sees() == ids - {member.mesh.node_id} for member in members),
                         timeout=5.0)
        peers = members[0].mesh.status().peers
        assert {peer.id for peer in peers if peer.linked} == ids - {members[0].mesh.node_id}
        for member in members:
            await member.stop()
    run(scenario(), timeout=15)


def test_a_revoked_invite_is_refused_with_the_reason_and_the_mesh_is_unharmed(network, tmp_path):
    async def scenario():
        founder = Member(network, tmp_path / "a", "founder")
        await founder.start()
        token = founder.mesh.mint_invite(3600)
        founder.mesh.revoke(token)
        stranger = Member(network, tmp_path / "x", "stranger")
        await stranger.mesh.bind()
        with pytest.raises(JoinRefused, match="revoked"):
            await stranger.mesh.join(token)
        assert stranger.mesh.mesh_id is None and founder.sees() == set()
        friend = Member(network, tmp_path / "b", "friend")
        await friend.start(founder.mesh.mint_invite(3600))
        await eventually(lambda: founder.sees() == {friend.mesh.node_id})
        await founder.stop()
        await friend.stop()
    run(scenario(), timeout=15)


def test_a_removed_member_is_cut_off_everywhere_and_its_dials_are_refused(network, tmp_path):
    async def scenario():
        founder, second, victim = await three_members(network, tmp_path)
        founder.mesh.remove(victim.mesh.node_id)
        await eventually(lambda: victim.mesh.removed_from_mesh, timeout=3.0)
        await eventually(lambda: victim.linked() == set() and victim.mesh.node_id not in second.linked()
                         and victim.mesh.node_id not in founder.linked(), timeout=5.0)
        # Its old key cannot come back: the refusal names the fault, not just words.
        dial_key = handshake.dial
        link = await victim.mesh.control_transport.connect((founder.host, PORT))
        with pytest.raises(Exception) as refused:
            await dial_key(link, victim.mesh.credentials, founder.mesh.mesh_id, victim.mesh.mesh_secret)
        assert getattr(refused.value, "fault", None) is Fault.REMOVED
        assert second.linked() == {founder.mesh.node_id}
        for member in (founder, second, victim):
            await member.stop()
    run(scenario(), timeout=20)


def test_a_member_that_breaks_the_protocol_is_dropped_alone(network, tmp_path):
    async def scenario():
        founder, second, rogue = await three_members(network, tmp_path)
        rogue_link_at_founder = founder.mesh.control.link_to(rogue.mesh.node_id).link
        founder.mesh.links.send(rogue_link_at_founder, {"type": "ping", "t": 0})  # still fine
        rogue_end = next(iter(link for number, link in rogue.mesh.links._links.items()
                              if rogue.mesh.links.peer_id(number) == founder.mesh.node_id))
        await rogue_end.send({"type": "launch-missiles"})
        await eventually(lambda: rogue.mesh.node_id not in founder.linked())
        assert second.mesh.node_id in founder.linked() and not founder.task.done()
        for member in (founder, second, rogue):
            await member.stop()
    run(scenario(), timeout=20)


def test_a_leaving_member_is_dropped_at_once(network, tmp_path):
    async def scenario():
        founder, second, leaver = await three_members(network, tmp_path)
        await leaver.stop()
        await eventually(lambda: leaver.mesh.node_id not in founder.sees()
                         and leaver.mesh.node_id not in second.sees(), timeout=1.0)
        await founder.stop()
        await second.stop()
    run(scenario(), timeout=15)


def test_data_links_reach_the_named_handler_and_unknown_purposes_are_closed(network, tmp_path):
    async def scenario():
        founder, second, _ = await three_members(network, tmp_path)
        reached = asyncio.Event()

        async def handler(identity, link) -> None:
            assert identity.node_id == founder.mesh.node_id
            await link.send({"type": "hello-back"})
            reached.set()

        second.mesh.data_plane_handlers["api"] = handler
        link = await founder.mesh.open_data_link(second.mesh.node_id, "api")
        assert (await asyncio.wait_for(link.receive(), 2.0))["type"] == "hello-back"
        await asyncio.wait_for(reached.wait(), 2.0)
        other = await founder.mesh.open_data_link(second.mesh.node_id, "nonsense")
        await eventually(lambda: other.closed or other.peer.closed)
        assert "no such channel" in other.peer.close_reasons
        for member in (founder, second, _):
            await member.stop()
    run(scenario(), timeout=20)


# ---------------------------------------------------------------- the mesh secret after a removal


def test_a_removal_rotates_the_secret_for_everyone_but_the_removed(network, tmp_path):
    async def scenario():
        founder, second, victim = await three_members(network, tmp_path)
        old_secret = founder.mesh.keys.current
        founder.mesh.remove(victim.mesh.node_id)
        await eventually(lambda: second.mesh.keys.epoch == 1, timeout=3.0)
        assert founder.mesh.keys.current == second.mesh.keys.current != old_secret
        assert victim.mesh.keys.current == old_secret and victim.mesh.keys.epoch == 0
        assert second.linked() == {founder.mesh.node_id}  # the honest mesh is unharmed
        for member in (founder, second, victim):
            await member.stop()
    run(scenario(), timeout=20)


def test_a_removed_node_with_a_fresh_key_cannot_use_the_secret_it_kept(network, tmp_path):
    async def scenario():
        founder, second, victim = await three_members(network, tmp_path)
        old_secret = founder.mesh.keys.current
        founder.mesh.remove(victim.mesh.node_id)
        await eventually(lambda: second.mesh.keys.epoch == 1, timeout=3.0)
        # The attack: a new key (not on the removed list) proving the old secret. Without the
        # rotation that secret would still be current, and this would get in.
        impostor = Member(network, tmp_path / "impostor", "impostor")
        await impostor.mesh.bind()
        for target in (founder, second):
            link = await impostor.mesh.control_transport.connect((target.host, PORT))
            with pytest.raises(Exception) as refused:
                await handshake.dial(link, impostor.mesh.credentials, founder.mesh.mesh_id, old_secret)
            assert getattr(refused.value, "fault", None) is Fault.UNAUTHENTICATED
        assert second.linked() == {founder.mesh.node_id} and founder.linked() == {second.mesh.node_id}
        for member in (founder, second, victim):
            await member.stop()
    run(scenario(), timeout=20)


def test_a_member_away_during_the_rotation_gets_back_in_and_learns_the_new_secret(network, tmp_path):
    async def scenario():
        founder, away, victim = await three_members(network, tmp_path)
        await away.stop()
        founder.mesh.remove(victim.mesh.node_id)
        await eventually(lambda: victim.mesh.removed_from_mesh, timeout=3.0)
        away.mesh = away.new_mesh()   # it comes back with its key and its (old) secret
        await away.start()
        await eventually(lambda: away.linked() == {founder.mesh.node_id}, timeout=5.0)
        await eventually(lambda: away.mesh.keys.epoch == 1, timeout=3.0)
        assert away.mesh.keys.current == founder.mesh.keys.current
        for member in (founder, away, victim):
            await member.stop()
    run(scenario(), timeout=20)


def test_a_rekey_from_a_member_that_may_not_remove_is_ignored(network, tmp_path, caplog):
    async def scenario():
        founder, second, third = await three_members(network, tmp_path)
        before = founder.mesh.keys.current
        forged = rotated(third.mesh.keys, third.mesh.mesh_id, third.mesh.node_id, third.mesh.credentials)
        end = next(number for number, link in third.mesh.links._links.items()
                   if third.mesh.links.peer_id(number) == founder.mesh.node_id)
        with caplog.at_level(logging.WARNING, logger="meshdesk.node.mesh_commands"):
            await third.mesh.links._links[end].send(forged.to_wire())
            await eventually(lambda: "may not rotate the mesh secret" in caplog.text)
        assert founder.mesh.keys.current == before and founder.mesh.keys.epoch == 0
        assert founder.linked() == {second.mesh.node_id, third.mesh.node_id}  # a relayer is not dropped
        for member in (founder, second, third):
            await member.stop()
    run(scenario(), timeout=20)
