"""Who may enter: the acceptor's checks on a dialler's hello, before any proof is exchanged."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from meshdesk.core.errors import Fault
from meshdesk.core.handshake import HandshakeError, Hello, version_conflict
from meshdesk.core.invite import TokenError, TokenRefused, check_token, decode_token

REMOVED_REASON = "this node was removed from the mesh"


@dataclass(frozen=True)
class MeshView:
    """What the accepting node knows of its mesh when a hello arrives."""

    mesh_id: str | None
    members: Collection[str]       # node ids known to belong (inviters must be among them)
    removed: Collection[str]
    revoked_tokens: Collection[str]
    versions: dict                 # the accepting node's own


def admit(hello: Hello, mesh: MeshView, now: float, verify: Callable[[bytes, bytes, bytes], bool]) -> None:
    """Raises HandshakeError with the reason to refuse, or returns to let the proofs decide."""
    if mesh.mesh_id is None:
        raise HandshakeError("this node is not in a mesh")
    if hello.node_id in mesh.removed:
        raise HandshakeError(REMOVED_REASON, Fault.REMOVED)
    conflict = version_conflict(mesh.versions, hello.versions)
    if conflict:
        raise HandshakeError(conflict, Fault.INCOMPATIBLE)
    if hello.invite is not None:
        admit_invite(hello.invite, mesh, now, verify)
    elif hello.mesh_id != mesh.mesh_id:
        raise HandshakeError(f"this node is in another mesh ({mesh.mesh_id})")


def admit_invite(invite: str, mesh: MeshView, now: float, verify) -> None:
    try:
        token = decode_token(invite)
        check_token(token, now=now, verify=verify, mesh_id=mesh.mesh_id,
                    revoked_token_ids=mesh.revoked_tokens, removed_node_ids=mesh.removed)
    except (TokenError, TokenRefused) as error:
        raise HandshakeError(str(error)) from None
    if token.inviter_id not in mesh.members:
        raise HandshakeError("invite token was not issued by a member of this mesh")
