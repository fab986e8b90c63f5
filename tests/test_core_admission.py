"""The acceptor's checks on a hello: removals, versions, meshes, and invites from non-members."""

from __future__ import annotations

import os
import time

import pytest

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.core.admission import MeshView, admit
from meshdesk.core.handshake import HandshakeError, Hello
from meshdesk.core.identity import node_id_for
from meshdesk.core.invite import InviteToken

MESH = "0123456789abcdef"
INVITER = NodeKey.generate()
DIALLER = NodeKey.generate()


def view(**changes) -> MeshView:
    fields = dict(mesh_id=MESH, members={node_id_for(INVITER.public_bytes)}, removed=set(),
                  revoked_tokens=set(), versions={"protocol": 1, "rpc": "a"})
    return MeshView(**(fields | changes))


def invite(key: NodeKey = INVITER, mesh_id: str = MESH) -> str:
    token = InviteToken(mesh_id=mesh_id, join_secret=os.urandom(16), inviter_key=key.public_bytes,
                        addresses=(("127.0.0.1", 9000),), expires_at=0)
    return token.signed(key.sign).encode()


def hello(mesh_id: str = MESH, invite_text: str | None = None, versions=None) -> Hello:
    return Hello("dial", mesh_id, DIALLER.public_bytes, b"\0" * 32, "x",
                 versions or {"protocol": 1, "rpc": "a"}, invite_text)


@pytest.mark.parametrize("case, mesh, reason", [
    (hello(), view(mesh_id=None), "not in a mesh"),
    (hello(), view(removed={node_id_for(DIALLER.public_bytes)}), "removed from the mesh"),
    (hello(versions={"protocol": 1, "rpc": "b"}), view(), "incompatible rpc version"),
    (hello(mesh_id="fedcba9876543210"), view(), "another mesh"),
    (hello(invite_text=invite(NodeKey.generate())), view(), "not issued by a member"),
    (hello(invite_text=invite(mesh_id="fedcba9876543210")), view(), "another mesh"),
    (hello(invite_text="garbage"), view(), "not a MeshDesk invite token"),
])
def test_refusals(case, mesh, reason):
    with pytest.raises(HandshakeError, match=reason):
        admit(case, mesh, time.time(), verify_signature)


def test_members_and_invites_from_members_are_admitted():
    admit(hello(), view(), time.time(), verify_signature)
    admit(hello(invite_text=invite()), view(), time.time(), verify_signature)
