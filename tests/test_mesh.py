"""Real `meshdesk --headless --client` nodes forming a mesh on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pytest

from tests.nodes import poll, run_meshdesk

pytestmark = pytest.mark.slow


def start_mesh(node_factory, joiners: int):
    founder = node_factory("--client")
    token = founder.invite_token()
    others = [node_factory("--client", "--join", token) for _ in range(joiners)]
    return founder, others


def everyone_sees_everyone(nodes) -> bool:
    ids = {node.node_id for node in nodes}
    return all(node.peer_ids() == ids - {node.node_id} for node in nodes)


def test_three_nodes_join_by_token_and_see_each_other(node_factory):
    founder, others = start_mesh(node_factory, 2)
    nodes = [founder, *others]
    poll(lambda: everyone_sees_everyone(nodes), 10, message="three nodes to see each other")
    status = founder.status()
    assert status["mesh"]["members"] == 3
    assert all(node.status()["mesh"]["id"] == status["mesh"]["id"] for node in others)
    peer = status["peers"][0]
    assert set(peer) >= {"id", "name", "role", "capacity_bytes", "rtt_ms", "models", "state", "last_seen_s"}
    assert peer["role"] == "client"
    poll(lambda: all(p["rtt_ms"] is not None for p in founder.status()["peers"]), 10,
         message="round-trip times to be measured")


def test_five_nodes_converge_within_five_seconds(node_factory):
    founder, others = start_mesh(node_factory, 4)
    for node in [founder, *others]:
        node.printed("Joined mesh" if node is not founder else "Created mesh")
    poll(lambda: everyone_sees_everyone([founder, *others]), 5, message="five nodes to converge")


def test_killed_node_disappears_and_quitting_node_leaves_at_once(node_factory):
    founder, (quitter, victim) = start_mesh(node_factory, 2)
    poll(lambda: everyone_sees_everyone([founder, quitter, victim]), 10, message="convergence")
    victim_id = victim.node_id
    victim.process.send_signal(signal.SIGKILL)
    poll(lambda: victim_id not in founder.peer_ids() and victim_id not in quitter.peer_ids(), 10,
         message="the killed node to disappear")

    quitter_id = quitter.node_id
    assert quitter.stop() == 0
    poll(lambda: quitter_id not in founder.peer_ids(), 2, message="the quitting node to leave")


def test_garbage_tokens_are_refused_before_anything_starts(tmp_path):
    for token in ["nonsense", "meshdesk://join/AAAA", ""]:
        result = run_meshdesk("--headless", "--client", "--home", str(tmp_path / "h"), "--port", "0",
                              "--join", token)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("meshdesk: error:"), result.stderr
        assert "Traceback" not in result.stderr


def joined_with(node_factory, token: str):
    joiner = node_factory("--client", "--join", token)
    code = joiner.process.wait(30)
    return code, "".join(joiner.output)


def test_tampered_token_is_refused(node_factory):
    founder = node_factory("--client")
    token = founder.invite_token()
    flipped = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    code, output = joined_with(node_factory, flipped)
    assert code == 2 and "altered or forged" in output


def test_revoked_token_is_refused(node_factory):
    founder = node_factory("--client")
    token = founder.post_json("/api/invite", {"expires_in": 3600})[1]["token"]
    result = run_meshdesk("revoke", token, "--home", str(founder.home))
    assert result.returncode == 0, result.stderr
    code, output = joined_with(node_factory, token)
    assert code == 2 and "revoked" in output


def test_expired_and_foreign_tokens_are_refused(node_factory):
    from meshdesk.core.invite import decode_token
    from tests.mesh_tools import node_key_of, resigned

    founder = node_factory("--client")
    token = decode_token(founder.invite_token())
    key = node_key_of(founder.home)
    code, output = joined_with(node_factory, resigned(token, key, expires_at=1_000_000).encode())
    assert code == 2 and "expired" in output
    code, output = joined_with(node_factory, resigned(token, key, mesh_id="0" * 16).encode())
    assert code == 2 and "another mesh" in output
    assert "another mesh" in json.dumps(founder.status()["refusals"])


def test_removed_node_is_dropped_everywhere_and_cannot_return(node_factory):
    founder, (friend, removed) = start_mesh(node_factory, 2)
    poll(lambda: everyone_sees_everyone([founder, friend, removed]), 10, message="convergence")
    removed_id, removed_home = removed.node_id, removed.home
    result = run_meshdesk("remove", removed_id, "--home", str(founder.home))
    assert result.returncode == 0, result.stderr
    poll(lambda: removed_id not in founder.peer_ids() | friend.peer_ids(), 5,
         message="the removed node to be dropped")
    poll(lambda: removed.status()["mesh"]["removed_from_mesh"], 5, message="the node to learn it was removed")
    removed.stop()

    comeback = node_factory("--client", home=removed_home)
    comeback.printed("Resumed mesh")
    poll(lambda: any("removed" in refusal["reason"] for refusal in
                     founder.status()["refusals"] + friend.status()["refusals"]), 10,
         message="the removed node's return to be refused")
    assert removed_id not in founder.peer_ids() | friend.peer_ids()


def test_invite_command_mints_a_working_token(node_factory):
    founder = node_factory("--client")
    founder.invite_token()
    result = run_meshdesk("invite", "--home", str(founder.home), "--expires", "1h")
    assert result.returncode == 0, result.stderr
    token = result.stdout.split("Invite token: ")[1].split()[0]
    assert "meshdesk://join/" + token in result.stdout
    joiner = node_factory("--client", "--join", token)
    poll(lambda: joiner.node_id in founder.peer_ids(), 10, message="the invited node to join")


def test_random_bytes_on_the_mesh_ports_harm_nothing(node_factory):
    founder, (friend,) = start_mesh(node_factory, 1)
    poll(lambda: everyone_sees_everyone([founder, friend]), 10, message="convergence")
    port = founder.status()["mesh"]["port"]
    rng = __import__("random").Random(5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for size in (0, 1, 20, 1200, 1500):
            udp.sendto(rng.randbytes(size), ("127.0.0.1", port))
    for payload in (rng.randbytes(3000), b"\x16\x03\x01" + rng.randbytes(200), b"GET / HTTP/1.0\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
            tcp.sendall(payload)
    friend_id = friend.node_id
    poll(lambda: friend_id in founder.peer_ids(), 5, message="the mesh to stay whole")
    joiner = node_factory("--client", "--join", founder.invite_token())
    poll(lambda: joiner.node_id in founder.peer_ids(), 10, message="a later join to work")


def test_a_removed_node_cannot_come_back_with_a_fresh_key_and_the_secret_it_kept(node_factory, tmp_path):
    """The attack of issue 10 item 4, through real QUIC: the secret alone admitted anyone."""
    import asyncio

    from meshdesk.adapters.node_keys import NodeKey
    from meshdesk.adapters.secret_store import open_secret_store
    from meshdesk.core.errors import Fault
    from meshdesk.core.invite import decode_token
    from meshdesk.node import handshake
    from tests.mesh_tools import credentials, quic_transport

    founder, (friend, removed) = start_mesh(node_factory, 2)
    poll(lambda: everyone_sees_everyone([founder, friend, removed]), 10, message="convergence")
    token = decode_token(founder.invite_token())
    kept_secret = open_secret_store(removed.home).get("mesh-secret")

    async def dial_with_kept_secret():
        key = NodeKey.generate()  # a fresh key: not on any removed list
        transport = quic_transport(key)
        try:
            link = await transport.connect(token.addresses[0])
            return await handshake.dial(link, credentials(key), token.mesh_id, kept_secret)
        except Exception as error:  # the refusal, typed
            return error
        finally:
            await transport.stop()

    assert not isinstance(asyncio.run(dial_with_kept_secret()), Exception)  # today the secret opens the mesh
    result = run_meshdesk("remove", removed.node_id, "--home", str(founder.home))
    assert result.returncode == 0, result.stderr
    poll(lambda: removed.node_id not in founder.peer_ids() | friend.peer_ids(), 5, message="the removal")
    refusal = asyncio.run(dial_with_kept_secret())
    assert getattr(refusal, "fault", None) is Fault.UNAUTHENTICATED, refusal
    assert friend.node_id in founder.peer_ids() and founder.node_id in friend.peer_ids()


def test_the_founder_names_an_admin_who_may_then_remove_and_others_may_not(node_factory):
    founder, (admin, member, victim) = start_mesh(node_factory, 3)
    poll(lambda: everyone_sees_everyone([founder, admin, member, victim]), 10, message="convergence")

    refused = run_meshdesk("admin", member.node_id, "--home", str(admin.home))  # not the founder
    assert refused.returncode == 2 and "founder" in refused.stderr, refused.stderr
    refused = run_meshdesk("remove", victim.node_id, "--home", str(member.home))  # not an admin
    assert refused.returncode == 2 and "admins" in refused.stderr, refused.stderr

    named = run_meshdesk("admin", admin.node_id, "--home", str(founder.home))
    assert named.returncode == 0, named.stderr

    def admin_may_remove() -> bool:
        result = run_meshdesk("remove", victim.node_id, "--home", str(admin.home))
        return result.returncode == 0
    poll(admin_may_remove, 10, message="the grant to reach the admin")
    poll(lambda: victim.node_id not in founder.peer_ids() | member.peer_ids(), 5, message="the removal")
    assert member.node_id in founder.peer_ids() and admin.node_id in founder.peer_ids()
