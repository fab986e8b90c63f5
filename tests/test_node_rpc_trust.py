"""Who may drive a member's rpc worker (its own plan's host, while the plan stands), and who may
use the host's 127.0.0.1 tunnel listeners (this user's processes only). Real loopback sockets;
only the mesh link is in memory."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import pytest

from meshdesk.core.planning import SOLO, SPLIT, Plan, PlanMember
from meshdesk.core.serving_plan import NOTHING_PLANNED, ServingPlan, host_allowed_to_drive, models_driven_by
from meshdesk.node import loopback_owner
from meshdesk.node.rpc_member import MemberSide
from meshdesk.node.rpc_tunnel import HostTunnel, Traffic
from tests.fakes import eventually, link_pair, run_on_loopback, within
from meshdesk.core.layer_manifest import LayerManifest, ManifestTensor
from tests.test_core_rpc_stream import DIGEST, GGUF, TENSORS
from tests.test_node_rpc_tunnel import (HELLO_MESSAGE, REFERENCED, WEIGHTS, Mesh, RpcWorkerPort, at_eof,
                                        no_referencer, read_piece)

HOST, WORKER, OTHER = "h" * 16, "w" * 16, "x" * 16
OTHER_DIGEST = "e" * 64


def split(host: str, members: tuple[str, ...], digest: str = DIGEST) -> ServingPlan:
    plan = Plan("m", host, SPLIT, tuple(PlanMember(member, 1 / len(members), 1) for member in members))
    return ServingPlan({digest: (plan,)}, {digest: "m"}, {})


PLAN = split(HOST, (WORKER, HOST))


# --- the pure query -----------------------------------------------------------------------------------

def test_only_the_elected_host_of_a_split_with_this_node_may_drive_it():
    assert models_driven_by(PLAN, WORKER, HOST) == {DIGEST}
    assert host_allowed_to_drive(PLAN, WORKER, HOST)
    assert not host_allowed_to_drive(PLAN, WORKER, OTHER)  # another member, a lite client
    assert not host_allowed_to_drive(PLAN, OTHER, HOST)  # a node outside the plan
    assert not host_allowed_to_drive(PLAN, HOST, HOST)
    assert not host_allowed_to_drive(PLAN, HOST, WORKER)  # members never drive the host
    assert not host_allowed_to_drive(NOTHING_PLANNED, WORKER, HOST)
    solo = ServingPlan({DIGEST: (Plan("m", HOST, SOLO, (PlanMember(HOST, 1.0, 1),)),)}, {DIGEST: "m"}, {})
    assert not host_allowed_to_drive(solo, WORKER, HOST)
    two = ServingPlan({**PLAN.plans, **split(OTHER, (WORKER, OTHER), OTHER_DIGEST).plans}, {}, {})
    assert models_driven_by(two, WORKER, OTHER) == {OTHER_DIGEST}


# --- the member's side ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    node_id: str


class Planner:
    def __init__(self, plan: ServingPlan):
        self.plan = plan


def member_side(planner: Planner, port: int, refusals: list, wait: float = 0.2) -> MemberSide:
    tables = {DIGEST: TENSORS}
    return MemberSide(WORKER, lambda: planner.plan, lambda: port, tables.get, read_piece, Traffic(),
                      lambda address, reason: refusals.append(reason), plan_wait=wait,
                      model_size=lambda host, digest: len(GGUF))


def manifest(names=("token_embd.weight",)) -> LayerManifest:
    import hashlib
    tensors = [TENSORS[name] for name in names]
    return LayerManifest(DIGEST, len(GGUF), tuple(ManifestTensor(
        t.name, t.file_offset, t.nbytes, hashlib.sha256(GGUF[t.file_offset:t.file_offset + t.nbytes]).hexdigest())
        for t in tensors))


async def offer(host_end) -> dict:
    """The host's half of the layer exchange, before the raw stream: the member's answer."""
    await host_end.send(manifest().to_wire())
    return await within(host_end.receive())


def test_a_peer_that_is_not_the_host_is_refused_and_never_reaches_the_worker():
    async def scenario(loopback):
        worker, refusals = RpcWorkerPort(loopback), []
        side = member_side(Planner(PLAN), await worker.start(), refusals)
        host_end, member_end = link_pair(("other", "member"))
        await within(side.serve(Peer(OTHER), member_end))
        assert member_end.closed and side.refused == 1
        assert refusals and "not the host of a plan that includes this node" in refusals[0]
        assert worker.connections.empty()

    run_on_loopback(scenario)


def test_the_host_drives_the_worker_and_a_new_plan_closes_its_tunnel():
    async def scenario(loopback):
        worker, refusals, planner = RpcWorkerPort(loopback), [], Planner(PLAN)
        side = member_side(planner, await worker.start(), refusals)
        host_end, member_end = link_pair(("host", "member"))
        serving = asyncio.ensure_future(side.serve(Peer(HOST), member_end))
        assert await offer(host_end) == {"type": "layers_held", "held": [0], "whole_file": True}
        reader, writer = host_end.detach()
        writer.write(HELLO_MESSAGE + REFERENCED)
        worker_reader, _ = await worker.next()
        assert await within(worker_reader.readexactly(len(HELLO_MESSAGE + WEIGHTS))) == HELLO_MESSAGE + WEIGHTS

        planner.plan = split(OTHER, (WORKER, OTHER))  # another host now: this one's tunnel goes
        side.plan_changed()
        await within(serving)
        assert await at_eof(worker_reader) == b"" and await at_eof(reader) == b""
        assert refusals == [] and side.sessions == []

    run_on_loopback(scenario)


def test_a_link_that_comes_just_before_the_plan_agrees_waits_for_it():
    async def scenario(loopback):
        worker, refusals, planner = RpcWorkerPort(loopback), [], Planner(NOTHING_PLANNED)
        side = member_side(planner, await worker.start(), refusals, wait=5.0)
        host_end, member_end = link_pair(("host", "member"))
        serving = asyncio.ensure_future(side.serve(Peer(HOST), member_end))
        await eventually(lambda: side.waiting == 1)
        planner.plan = PLAN
        side.plan_changed()
        await offer(host_end)
        await worker.next()
        assert not member_end.closed and refusals == []
        serving.cancel()

    run_on_loopback(scenario)


def test_a_disallowed_command_closes_the_tunnel_and_the_next_one_still_works():
    async def scenario(loopback):
        worker, refusals = RpcWorkerPort(loopback), []
        side = member_side(Planner(PLAN), await worker.start(), refusals)
        host_end, member_end = link_pair(("host", "member"))
        serving = asyncio.ensure_future(side.serve(Peer(HOST), member_end))
        await offer(host_end)
        reader, writer = host_end.detach()
        writer.write(HELLO_MESSAGE)
        worker_reader, _ = await worker.next()
        assert await within(worker_reader.readexactly(len(HELLO_MESSAGE))) == HELLO_MESSAGE
        writer.write(bytes([0x42]) + bytes(8))  # command 66: not in the table
        assert await at_eof(worker_reader) == b"" and await at_eof(reader) == b""
        await within(serving)

        host_end, member_end = link_pair(("host", "member"))
        serving = asyncio.ensure_future(side.serve(Peer(HOST), member_end))
        await offer(host_end)
        host_end.detach()[1].write(HELLO_MESSAGE)
        worker_reader, _ = await worker.next()
        assert await within(worker_reader.readexactly(len(HELLO_MESSAGE))) == HELLO_MESSAGE
        serving.cancel()

    run_on_loopback(scenario)


# --- the host's 127.0.0.1 listeners ---------------------------------------------------------------------

def test_the_proc_net_tcp_spelling_of_addresses():
    assert loopback_owner.proc_address("127.0.0.1", 0x1F90, 8) == "0100007F:1F90"
    assert loopback_owner.proc_address("127.0.0.1", 80, 32) == "0000000000000000FFFF00000100007F:0050"
    table = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
             "   0: 0100007F:1F90 0100007F:0050 01 00000000:00000000 00:00000000 00000000  1000        0 1\n")
    assert loopback_owner.uid_in_table(table, "0100007F:1F90", "0100007F:0050") == 1000
    assert loopback_owner.uid_in_table(table, "0100007F:0050", "0100007F:1F90") is None


NOBODY = 65534
CONNECT_AS_NOBODY = """
import encodings.idna, os, socket, sys
os.setgid({uid}); os.setuid({uid})
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
try:
    connection.sendall(bytes.fromhex(sys.argv[2]))
    print("closed" if connection.recv(100) == b"" else "answered")
except ConnectionResetError:
    print("closed")
"""


def connect_as(uid: int, port: int, payload: bytes) -> str:
    """Another local user on this machine connecting to the port and sending `payload`."""
    result = subprocess.run([sys.executable, "-c", CONNECT_AS_NOBODY.format(uid=uid), str(port),
                             payload.hex()], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(not loopback_owner.can_check_owners(), reason="no /proc/net/tcp: owners are not known here")
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can start a process as another user")
def test_another_local_user_cannot_use_the_hosts_tunnel_listener():
    async def scenario(loopback):
        mesh = Mesh()
        tunnel = HostTunnel("member-1", mesh.open_link, no_referencer, Traffic())
        port = int((await tunnel.start()).split(":")[1])
        answer = await asyncio.to_thread(connect_as, NOBODY, port, HELLO_MESSAGE)
        assert answer == "closed" and mesh.opened == [] and tunnel.refused_local == 1  # closed, no link

        own = socket.create_connection(("127.0.0.1", port))  # this user's model host
        own.sendall(HELLO_MESSAGE)
        member_reader, _ = await mesh.member_end()
        assert await within(member_reader.readexactly(len(HELLO_MESSAGE))) == HELLO_MESSAGE
        assert mesh.opened == [("member-1", "rpc")]
        own.close()
        await tunnel.stop()

    run_on_loopback(scenario)


def test_without_an_owner_table_the_listener_accepts_and_says_so(tmp_path):
    missing = (tmp_path / "tcp", tmp_path / "tcp6")
    assert not loopback_owner.can_check_owners(missing)
    assert loopback_owner.from_this_user(("127.0.0.1", 1), ("127.0.0.1", 2), missing)


def test_links_waiting_for_the_plan_are_bounded(monkeypatch):
    from meshdesk.node import rpc_member

    monkeypatch.setattr(rpc_member, "MAX_WAITING_LINKS", 2)

    async def scenario(loopback):
        worker, refusals = RpcWorkerPort(loopback), []
        side = member_side(Planner(NOTHING_PLANNED), await worker.start(), refusals, wait=5.0)
        ends = [link_pair(("other", "member"))[1] for _ in range(3)]
        waiting = [asyncio.ensure_future(side.serve(Peer(OTHER), end)) for end in ends[:2]]
        await eventually(lambda: side.waiting == 2)
        await within(side.serve(Peer(OTHER), ends[2]))
        assert ends[2].closed and "too many rpc links waiting" in refusals[0]
        side.plan_changed()  # still not the host: the waiting ones go on waiting, then are refused
        assert not ends[0].closed
        for task in waiting:
            task.cancel()

    run_on_loopback(scenario)
