"""What a user can ask of the mesh: joining, invites, revocations, removals, the secret
rotations that follow removals (a member's own, or one passed on by a peer), and which models
the mesh serves (wants and drops, `core.membership_wants`).

Part of MeshService (a mixin, to keep each file to one concern); it uses the service's peer
control, memory, clocks, transports and credentials.
"""

from __future__ import annotations

import asyncio
import logging
import re

from meshdesk.core import peer_control as pc
from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.handshake import Refused
from meshdesk.core.identity import NODE_ID_LENGTH
from meshdesk.core.invite import MAX_ADDRESSES, InviteToken, TokenRefused, check_token
from meshdesk.core.reachability import invite_addresses
from meshdesk.node.linking import Dial, HandshakeFailed, Unreachable, connect_and_authenticate
from meshdesk.node.mesh_secrets import newer_rekey, rotated

log = logging.getLogger(__name__)

NODE_ID = re.compile(f"[0-9a-f]{{{NODE_ID_LENGTH}}}")
JOIN_TIMEOUT = 5.0
JOIN_ATTEMPT_FACTOR = 3  # a whole attempt: connect, then handshake, with room to spare
LEAVE_TIMEOUT = 2.0


class JoinRefused(Exception):
    """The mesh said no to our invite token; str() says why."""


class MeshCommands:
    """Mixed into MeshService: the requests a user makes of the mesh."""

    async def leave(self) -> None:
        """Tells every peer we are going, so they drop us at once, then closes the links."""
        if self.control is not None and self.links.count():
            farewells = [output for output in self.control.leave(self.clock())
                         if isinstance(output, pc.SendMessage)]
            await self.links.send_now(farewells, LEAVE_TIMEOUT)
        self._save()
        self.links.close_all("leaving")
        await self.stop_relaying()
        await self.control_transport.stop()
        await self.data_transport.stop()

    def check_invite_locally(self, token: InviteToken) -> None:
        """What a joiner can tell by itself: forged or altered tokens, expiry."""
        try:
            check_token(token, now=self.wall_clock(), verify=self.credentials.verify)
        except TokenRefused as refusal:
            raise JoinRefused(str(refusal)) from None

    async def join(self, token: InviteToken, timeout: float = JOIN_TIMEOUT) -> bool:
        """Joins the token's mesh through its inviter: True when in, False when unreachable.

        Raises JoinRefused when the mesh refuses the token.
        """
        self.check_invite_locally(token)
        if self.mesh_secret is not None and self.mesh_id == token.mesh_id:
            self._remember_addresses(list(token.addresses))
            return True
        dial = Dial(token.mesh_id, None, invite=token.encode(), expected_node_key=token.inviter_key)
        self.inviter_keys[token.inviter_id] = token.inviter_key  # so mDNS recognises the inviter
        # Where the inviter was heard on our LAN first: near, and the handshake checks its key.
        heard_on_lan = self.lan.addresses_of(token.inviter_id)
        for address in dict.fromkeys([*heard_on_lan, *token.addresses]):
            log.info("joining mesh %s through %s:%s", token.mesh_id, *address)  # a stall shows where
            try:
                # Each step has its own timeout; the whole attempt is bounded too, so one
                # address that stalls cannot hold up the join (it is retried in the background).
                async with asyncio.timeout(timeout * JOIN_ATTEMPT_FACTOR):
                    link, identity = await connect_and_authenticate(
                        self.control_transport, address, self.credentials, dial, timeout)
            except (Unreachable, TimeoutError) as error:
                log.info("invite address unreachable: %s", str(error) or "the attempt took too long")
                continue
            except HandshakeFailed as failure:
                cause = failure.cause
                if address in heard_on_lan and address not in token.addresses:
                    # Anyone can announce a copy on the LAN: their refusal is not the mesh's.
                    log.info("not the inviter on the LAN at %s:%s: %s", *address, cause)
                    continue
                raise JoinRefused(cause.reason if isinstance(cause, Refused) else str(cause)) from None
            self.keys.start_over(identity.mesh_secret)
            self._enter_mesh(token.mesh_id, inviter=identity.node_id)
            self._remember_addresses(list(token.addresses))
            self._link_up(identity, link, dialled_by_us=True)
            return True
        return False

    def mint_invite(self, expires_in: int) -> InviteToken:
        expires_at = 0 if expires_in == 0 else int(self.wall_clock()) + expires_in
        token = InviteToken(mesh_id=self.mesh_id, join_secret=self.credentials.random_bytes(16),
                            inviter_key=self.credentials.public_key,
                            addresses=tuple(self.invite_addresses()), expires_at=expires_at)
        return token.signed(self.credentials.sign)

    def invite_addresses(self) -> list[tuple[str, int]]:
        """Our own addresses, those members confirm they reach us at (`record_addresses`), and
        where a relay makes us reachable (for a joiner behind a router no punch gets through)."""
        own = self.advertised_addresses()
        confirmed = [address for address in self.record_addresses() if address not in own]
        return invite_addresses(own, confirmed + self.relayed_addresses(), MAX_ADDRESSES)

    def revoke(self, token: InviteToken) -> None:
        """Raises ValueError with the reason for the user."""
        if token.mesh_id != self.mesh_id:
            raise ValueError(f"that invite is for another mesh ({token.mesh_id})")
        self._carry_out(self.control.revoke(self.clock(), token.token_id))

    def remove(self, node_id: str) -> None:
        """Removes a member mesh-wide; raises ValueError with the reason for the user."""
        if node_id == self.node_id:
            raise ValueError("a node cannot remove itself; quit it instead")
        self._check_node_id(node_id)
        membership = self.control.membership
        known = set(self.memory.members) | set(membership.peer_states(self.clock())) \
            | membership.removed_node_ids
        if node_id not in known:
            raise ValueError(f"no node {node_id} is known in this mesh")
        self._carry_out(self.control.remove(self.clock(), node_id))
        # The removed node still knows the secret: a new one, for everyone but it.
        self._spread_rekey(rotated(self.keys, self.mesh_id, self.node_id, self.credentials), frozenset({node_id}))

    def make_admin(self, node_id: str) -> None:
        """Names a member an admin, who may then remove and revoke; the founder only.

        Raises ValueError with the reason for the user."""
        self._check_node_id(node_id)
        record = next((r for r in self.alive_records() if r.node_id == node_id), None)
        if record is None:
            raise ValueError(f"no node {node_id} is in the mesh now; an admin is named while it is online")
        if node_id == self.node_id:
            raise ValueError("this node holds the mesh's authority already")
        self._carry_out(self.control.grant_admin(self.clock(), bytes.fromhex(record.public_key)))

    def mesh_wants(self) -> list | None:
        """The mesh's want entries (`core.wants.WantEntry`), oldest first; None outside a mesh."""
        return None if self.membership is None else self.membership.wants.entries()

    def want_model(self, digest: str) -> None:
        """A fresh want, mesh-wide, for a model this node advertises; ValueError says why not."""
        self._write_want(lambda now: self.membership.want(now, digest))

    def drop_model(self, digest: str) -> None:
        """Drops a model the mesh serves, for every node; ValueError says why not."""
        self._write_want(lambda now: self.membership.drop_model(now, digest))

    def _write_want(self, write) -> None:
        if self.membership is None or self.removed_from_mesh:
            raise ValueError("this node is not in a mesh")
        entry = write(self.clock())
        log.info("%s %s for the mesh", "wanting" if entry.wanted else "dropping", entry.advert.name)
        self._carry_out(self.control.update_own(self.clock(), self.own_record()))  # sends the entry now
        self._save()

    def _check_node_id(self, node_id: str) -> None:
        if not NODE_ID.fullmatch(node_id):
            raise ValueError(f"not a node id: {node_id[:40]!r} ({NODE_ID_LENGTH} hex characters, "
                             "as in /api/status)")

    def _rekey_received(self, peer_id: str, message: dict) -> None:
        try:
            rekey = newer_rekey(message, self.keys, self.mesh_id, self.membership, self.clock(),
                                self.credentials.verify)
        except PeerProtocolError as error:  # relayed: the relayer may not know better
            log.warning("ignoring a rekey passed on by %s: %s", peer_id, error)
            return
        if rekey is not None:
            self._spread_rekey(rekey, frozenset({peer_id}))

    def _spread_rekey(self, rekey, except_peers: frozenset[str]) -> None:
        """Takes a new secret and passes it on; every link made later hears it too."""
        log.info("the mesh secret is now at epoch %d (rotated by %s)", rekey.epoch, rekey.by)
        self.keys.take(rekey)
        self.control.greeting = rekey.to_wire()
        self._carry_out(self.control.broadcast(self.clock(), rekey.to_wire(), except_peers))
