"""Running the mesh handshake over a link, as dialler or as acceptor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from meshdesk.core import handshake as hs
from meshdesk.core.errors import Fault
from meshdesk.core.handshake import ACCEPT, DIAL, Auth, HandshakeError, Hello
from meshdesk.node.interfaces import MessageLink

HANDSHAKE_TIMEOUT = 5.0  # the whole exchange, hellos and proofs; the acceptor's transport also
                         # cuts off a peer that has not authenticated PRE_AUTH_SECONDS after connecting


@dataclass(frozen=True)
class Credentials:
    """What this node proves itself with."""

    public_key: bytes
    sign: Callable[[bytes], bytes]
    verify: Callable[[bytes, bytes, bytes], bool]
    name: str
    versions: dict
    random_bytes: Callable[[int], bytes]


@dataclass(frozen=True)
class PeerIdentity:
    """A peer that proved its key and its right to be in the mesh."""

    hello: Hello
    mesh_secret: bytes | None = None  # handed to us when we joined by invite
    observed: tuple[str, int] | None = None  # where this peer says it sees us (QUIC links)

    @property
    def node_id(self) -> str:
        return self.hello.node_id


# Raises HandshakeError with the reason to refuse; returns the mesh secrets this dialler may
# prove membership with (None: the current one only; known members may use older ones).
Admission = Callable[[Hello], "list[bytes] | None"]


def own_hello(credentials: Credentials, role: str, mesh_id: str, invite: str | None,
              purpose: str) -> Hello:
    return Hello(role=role, mesh_id=mesh_id, node_key=credentials.public_key,
                 nonce=credentials.random_bytes(hs.NONCE_BYTES), name=credentials.name,
                 versions=credentials.versions, invite=invite, purpose=purpose)


def own_auth(credentials: Credentials, digest: bytes, role: str, mesh_secret: bytes | None,
             secret_for_joiner: bytes | None = None, observed: tuple[str, int] | None = None) -> Auth:
    mac = None if mesh_secret is None else hs.membership_mac(mesh_secret, digest, role)
    return Auth(credentials.sign(hs.signed_statement(digest, role)), mac, secret_for_joiner, observed)


def observation(link: MessageLink) -> tuple[str, int] | None:
    """Where we see the peer's end of a control link, to tell it (`core.reachability`). Not on
    the data plane: TLS runs over TCP, whose NAT mappings say nothing of the QUIC port's."""
    return tuple(link.remote_address) if link.plane == "quic" else None


def check_signature(credentials: Credentials, hello: Hello, auth: Auth, digest: bytes, role: str) -> None:
    if not credentials.verify(hello.node_key, hs.signed_statement(digest, role), auth.signature):
        raise HandshakeError("the peer could not prove it holds its node key", Fault.UNAUTHENTICATED)


async def dial(link: MessageLink, credentials: Credentials, mesh_id: str, mesh_secret: bytes | None,
               invite: str | None = None, purpose: str = "control",
               expected_node_key: bytes | None = None) -> PeerIdentity:
    """Authenticate to the acceptor; with `invite` and no secret, join its mesh."""
    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
        if expected_node_key is not None and link.server_public_key != expected_node_key:
            # Before our hello: someone else at that address (an mDNS announcement copied next to
            # their own address) learns nothing of us, not even our mesh id.
            raise HandshakeError("the peer is not the node we meant to reach: its TLS key is another's "
                                 "(someone is in between, or someone else is at that address)", Fault.UNAUTHENTICATED)
        mine = own_hello(credentials, DIAL, mesh_id, invite, purpose)
        await link.send(mine.to_wire())
        theirs = hs.parse_hello(await link.receive(), ACCEPT)
        check_acceptor_key(link, theirs, expected_node_key)
        if theirs.mesh_id != mesh_id:
            raise HandshakeError(f"the peer is in another mesh ({theirs.mesh_id})")
        digest = hs.transcript(mine, theirs, link.server_public_key, link.plane,
                               own_tls_key(link, credentials))
        await link.send(own_auth(credentials, digest, DIAL, mesh_secret, observed=observation(link)).to_wire())
        auth = hs.parse_auth(await link.receive())
        check_signature(credentials, theirs, auth, digest, ACCEPT)
        secret = mesh_secret or auth.mesh_secret
        if secret is None or not hs.mac_matches(secret, digest, ACCEPT, auth.mac):
            raise HandshakeError("the peer could not prove it belongs to the mesh", Fault.UNAUTHENTICATED)
        return PeerIdentity(theirs, auth.mesh_secret if mesh_secret is None else None, auth.observed)


def own_tls_key(link: MessageLink, credentials: Credentials) -> bytes | None:
    """The key our client certificate shows, on a plane that sends one (None on QUIC)."""
    presented = link.client_public_key
    if presented is not None and presented != credentials.public_key:
        raise HandshakeError("our own TLS key is not our node key")  # a wiring bug, not the peer
    return presented


def check_dialler_key(link: MessageLink, hello: Hello) -> bytes | None:
    """The dialler's TLS key, on a plane with client certificates; it must be its node key."""
    presented = link.client_public_key
    if presented is not None and presented != hello.node_key:
        raise HandshakeError("the peer's TLS key is not its node key: someone is in between",
                             Fault.UNAUTHENTICATED)
    return presented


def check_acceptor_key(link: MessageLink, hello: Hello, expected_node_key: bytes | None) -> None:
    if link.server_public_key != hello.node_key:
        raise HandshakeError("the peer's TLS key is not its node key: someone is in between",
                             Fault.UNAUTHENTICATED)
    if expected_node_key is not None and hello.node_key != expected_node_key:
        raise HandshakeError("the peer is not the node we meant to reach: its TLS key is another's "
                                 "(someone is in between, or someone else is at that address)", Fault.UNAUTHENTICATED)


async def accept(link: MessageLink, credentials: Credentials, mesh_id: str, mesh_secret: bytes,
                 admit: Admission) -> PeerIdentity:
    """Authenticate a dialler; `admit` decides on removals, versions and invites."""
    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
        message = await link.receive()
        try:
            theirs = hs.parse_hello(message, DIAL)  # an older build hears why: the protocols that met
            dialler_tls_key = check_dialler_key(link, theirs)
            acceptable = admit(theirs) or [mesh_secret]
        except HandshakeError as error:
            await link.send(hs.refuse_message(str(error), error.fault))
            raise
        mine = own_hello(credentials, ACCEPT, mesh_id, None, theirs.purpose)
        await link.send(mine.to_wire())
        digest = hs.transcript(theirs, mine, credentials.public_key, link.plane, dialler_tls_key)
        auth = hs.parse_auth(await link.receive())
        check_signature(credentials, theirs, auth, digest, DIAL)
        joining = theirs.invite is not None and auth.mac is None
        matched = next((secret for secret in acceptable if hs.mac_matches(secret, digest, DIAL, auth.mac)), None)
        if not joining and matched is None:
            await link.send(hs.refuse_message("not a member of this mesh", Fault.UNAUTHENTICATED))
            raise HandshakeError("the peer could not prove it belongs to the mesh", Fault.UNAUTHENTICATED)
        # Answer with the secret the dialler proved, so it can check us (an older one while it catches up).
        reply = own_auth(credentials, digest, ACCEPT, matched or mesh_secret, mesh_secret if joining else None,
                         observation(link))
        await link.send(reply.to_wire())
        link.authenticated()
        return PeerIdentity(theirs, observed=auth.observed)
