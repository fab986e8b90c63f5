"""The mesh: creating or joining one, keeping a link to every member, and gossiping records.

Each pair of members keeps one authenticated control link (QUIC). The node with the lower id
dials; a joiner dials its inviter; a restarted node dials the addresses it remembers. Gossip,
failure detection, removals and revocations are `core.membership`'s; this module only moves
its messages and feeds it real time.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshdesk.core.frames import FrameError
from meshdesk.core.admission import REMOVED_REASON, MeshView, admit
from meshdesk.core.handshake import HandshakeError, Hello
from meshdesk.core.identity import NODE_ID_LENGTH, mesh_id_for, node_id_for
from meshdesk.core.invite import InviteToken, TokenRefused, check_token
from meshdesk.core.membership import Membership, MembershipError, NodeRecord
from meshdesk.node import handshake
from meshdesk.node.handshake import Credentials, PeerIdentity
from meshdesk.node.interfaces import LinkClosed, MessageLink, SecretStore
from meshdesk.node.mesh_state import MeshMemory, load_memory, save_memory
from meshdesk.node.mesh_status import mesh_status, peer_status

log = logging.getLogger(__name__)

MESH_SECRET = "mesh-secret"
TICK_SECONDS = 0.1
PING_INTERVAL = 1.0
DIAL_RETRY_SECONDS = 2.0
SAVE_INTERVAL = 5.0
RTT_REPORT_INTERVAL = 5.0
MAX_REFUSALS_SHOWN = 10
REFUSAL_LINGER_SECONDS = 1.0
NODE_ID = re.compile(f"[0-9a-f]{{{NODE_ID_LENGTH}}}")


class JoinRefused(Exception):
    """The mesh said no to our invite token; str() says why."""


@dataclass
class Peer:
    identity: PeerIdentity
    link: MessageLink
    dialled_by_us: bool
    rtt_ms: float | None = None
    task: asyncio.Task | None = None
    told_removed: bool = False

    @property
    def node_id(self) -> str:
        return self.identity.node_id


@dataclass
class MeshSettings:
    home: Path
    bind_host: str = "0.0.0.0"
    bind_port: int = 0
    advertise_hosts: list[str] = field(default_factory=list)


class MeshService:
    def __init__(self, settings: MeshSettings, credentials: Credentials, secrets: SecretStore,
                 control_transport, data_transport, own_record: Callable[[], dict],
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.settings = settings
        self.credentials = credentials
        self.secrets = secrets
        self.control_transport = control_transport
        self.data_transport = data_transport
        self.own_record = own_record
        self.clock = clock
        self.wall_clock = wall_clock
        self.node_id = node_id_for(credentials.public_key)
        self.memory: MeshMemory = load_memory(settings.home)
        self.mesh_secret: bytes | None = None
        self.membership: Membership | None = None
        self.peers: dict[str, Peer] = {}
        self.port: int | None = None
        self.refusals: list[dict] = []
        self.removed_from_mesh = False
        self.last_dial: dict[tuple, float] = {}
        self.data_plane_handlers: dict[str, Callable] = {}
        self.on_change: Callable[[], None] = lambda: None

    # --- starting ------------------------------------------------------------------------

    async def bind(self) -> int:
        """Listens for QUIC (UDP) and TLS (TCP) on one port number; returns it."""
        preferred = self.settings.bind_port or self.memory.port or 0
        for attempt in range(20):
            port = preferred if attempt == 0 else 0
            try:
                self.port = await self.control_transport.start(self.settings.bind_host, port, self._accepted)
                await self.data_transport.start(self.settings.bind_host, self.port, self._accepted_data)
                return self.port
            except OSError:
                await self.control_transport.stop()
                if self.settings.bind_port:
                    raise
        raise OSError("no port number is free for both UDP and TCP")

    def advertised_addresses(self) -> list[tuple[str, int]]:
        return [(host, self.port) for host in self.settings.advertise_hosts]

    def load_or_create_mesh(self) -> bool:
        """Resumes the stored mesh, or founds a new one; True when founded now."""
        secret = self.secrets.get(MESH_SECRET)
        if secret is not None and self.memory.mesh_id == mesh_id_for(secret):
            self._enter_mesh(secret)
            return False
        self._enter_mesh(self.credentials.random_bytes(32))
        self.secrets.set(MESH_SECRET, self.mesh_secret)
        return True

    def _enter_mesh(self, secret: bytes) -> None:
        if self.memory.mesh_id != mesh_id_for(secret):
            self.memory.forget_mesh()
        self.mesh_secret = secret
        self.memory.mesh_id = mesh_id_for(secret)
        self.memory.port = self.port
        self.memory.advertised = [list(address) for address in self.advertised_addresses()]
        if self.node_id not in self.memory.members:
            self.memory.members.append(self.node_id)
        self.membership = Membership(self._record(generation=int(self.wall_clock() * 1000)))
        now = self.clock()
        for node_id in self.memory.removed:
            self.membership.remove(now, node_id)
        for token_id in self.memory.revoked:
            self.membership.revoke_token(now, token_id)
        self._save()

    def _record(self, generation: int) -> NodeRecord:
        fields = self.own_record()
        return NodeRecord(node_id=self.node_id, addresses=tuple(self.advertised_addresses()),
                          public_key=self.credentials.public_key.hex(), generation=generation,
                          rtt_ms={}, **fields)

    @property
    def mesh_id(self) -> str | None:
        return self.memory.mesh_id

    # --- joining -------------------------------------------------------------------------

    def check_invite_locally(self, token: InviteToken) -> None:
        """What a joiner can tell by itself: forged or altered tokens, expiry."""
        try:
            check_token(token, now=self.wall_clock(), verify=self.credentials.verify)
        except TokenRefused as refusal:
            raise JoinRefused(str(refusal)) from None

    async def join(self, token: InviteToken, timeout: float = 5.0) -> bool:
        """Joins the token's mesh through its inviter: True when in, False when unreachable.

        Raises JoinRefused when the mesh refuses the token.
        """
        self.check_invite_locally(token)
        if self.mesh_secret is not None and self.mesh_id == token.mesh_id:
            self.memory.remember_peer_addresses(list(token.addresses))
            return True
        for address in token.addresses:
            try:
                link = await self.control_transport.connect(address, timeout)
            except (OSError, asyncio.TimeoutError, ConnectionError) as error:
                log.info("invite address %s unreachable: %s", address, error)
                continue
            try:
                identity = await handshake.dial(link, self.credentials, token.mesh_id, None,
                                                invite=token.encode(), expected_node_key=token.inviter_key)
            except (HandshakeError, LinkClosed, FrameError, TimeoutError) as error:
                link.close("handshake failed")
                raise JoinRefused(str(error).removeprefix("refused by peer: ")) from None
            self._enter_mesh(identity.mesh_secret)
            self.secrets.set(MESH_SECRET, identity.mesh_secret)
            self.memory.remember_peer_addresses(list(token.addresses))
            self._add_peer(identity, link, dialled_by_us=True)
            return True
        return False

    # --- accepting -----------------------------------------------------------------------

    def _admit(self, hello: Hello) -> None:
        if self.membership is None or self.removed_from_mesh:
            raise HandshakeError("this node is not in a mesh")
        view = MeshView(self.mesh_id, frozenset(self.memory.members), self.membership.removed_node_ids,
                        self.membership.revoked_token_ids, self.credentials.versions)
        admit(hello, view, self.wall_clock(), self.credentials.verify)

    async def _accepted(self, link: MessageLink) -> None:
        try:
            identity = await handshake.accept(link, self.credentials, self.mesh_id or "-",
                                              self.mesh_secret or b"", self._admit)
        except (HandshakeError, TimeoutError) as error:
            self._note_refusal(link.remote_address, str(error))
            await self._close_after_refusal(link)
            return
        peer = self._add_peer(identity, link, dialled_by_us=False)
        if peer is not None:
            await peer.task

    async def _accepted_data(self, link: MessageLink) -> None:
        try:
            identity = await handshake.accept(link, self.credentials, self.mesh_id or "-",
                                              self.mesh_secret or b"", self._admit_data)
        except (HandshakeError, TimeoutError) as error:
            self._note_refusal(link.remote_address, f"data plane: {error}")
            await self._close_after_refusal(link)
            return
        handler = self.data_plane_handlers.get(identity.hello.purpose)
        if handler is None:
            link.close("no such channel")
            return
        await handler(identity, link)

    async def _close_after_refusal(self, link: MessageLink) -> None:
        """Gives the refusal time to arrive: the dialler hangs up once it has read it."""
        try:
            await asyncio.wait_for(link.receive(), REFUSAL_LINGER_SECONDS)
        except (LinkClosed, FrameError, ConnectionError, asyncio.TimeoutError):
            pass
        link.close("refused")

    def _admit_data(self, hello: Hello) -> None:
        if hello.invite is not None:
            raise HandshakeError("invites are accepted on the control plane only")
        self._admit(hello)

    def _note_refusal(self, address, reason: str) -> None:
        log.warning("refused a peer at %s: %s", address, reason)
        entry = {"address": f"{address[0]}:{address[1]}", "reason": reason,
                 "at": round(self.wall_clock())}
        self.refusals = (self.refusals + [entry])[-MAX_REFUSALS_SHOWN:]
        self.on_change()

    # --- peers ---------------------------------------------------------------------------

    def _add_peer(self, identity: PeerIdentity, link: MessageLink, dialled_by_us: bool) -> Peer | None:
        existing = self.peers.get(identity.node_id)
        peer = Peer(identity, link, dialled_by_us)
        if existing is not None and not self._prefer(peer, existing):
            link.close("duplicate connection")
            return None
        if existing is not None:
            existing.link.close("duplicate connection")
            if existing.task is not None:
                existing.task.cancel()
        self.peers[peer.node_id] = peer
        if peer.node_id not in self.memory.members:
            self.memory.members.append(peer.node_id)
        self.membership.peer_connected(self.clock(), peer.node_id)
        peer.task = asyncio.ensure_future(self._serve_peer(peer))
        log.info("linked with %s (%s)", identity.hello.name, peer.node_id)
        self.on_change()
        return peer

    def _prefer(self, new: Peer, existing: Peer) -> bool:
        """Both ends keep the link dialled by the lower node id, so they agree."""
        we_are_lower = self.node_id < new.node_id
        return new.dialled_by_us == we_are_lower and existing.dialled_by_us != we_are_lower

    async def _serve_peer(self, peer: Peer) -> None:
        try:
            while True:
                self._handle(peer, await peer.link.receive())
        except (LinkClosed, ConnectionError):
            pass
        except (FrameError, MembershipError, ValueError) as error:
            log.warning("dropping %s: it sent %s", peer.node_id, error)
            peer.link.close("protocol error")
        finally:
            self._drop(peer)

    def _handle(self, peer: Peer, message: dict) -> None:
        kind = message.get("type")
        if kind == "gossip":
            self.membership.receive(self.clock(), peer.node_id, message)
            self._after_gossip()
        elif kind == "ping":
            asyncio.ensure_future(self._send(peer, {"type": "pong", "t": message.get("t")}))
        elif kind == "pong":
            self._measure_rtt(peer, message.get("t"))
        elif kind == "removed":
            self._leave_removed()
        else:
            raise ValueError(f"an unknown message type {str(kind)[:40]!r}")

    def _measure_rtt(self, peer: Peer, sent_at) -> None:
        if isinstance(sent_at, (int, float)) and not isinstance(sent_at, bool):
            sample = max(0.0, (self.clock() - sent_at) * 1000)
            peer.rtt_ms = sample if peer.rtt_ms is None else 0.8 * peer.rtt_ms + 0.2 * sample

    def _drop(self, peer: Peer) -> None:
        if self.peers.get(peer.node_id) is peer:
            del self.peers[peer.node_id]
            if self.membership is not None:
                self.membership.peer_disconnected(self.clock(), peer.node_id)
            self.on_change()

    async def _send(self, peer: Peer, message: dict) -> None:
        try:
            await peer.link.send(message)
        except (LinkClosed, ConnectionError):
            peer.link.close()

    def _after_gossip(self) -> None:
        if self.node_id in self.membership.removed_node_ids:
            self._leave_removed()
            return
        for node_id in self.membership.removed_node_ids & set(self.peers):
            asyncio.ensure_future(self._tell_removed(self.peers[node_id]))
        self.on_change()

    def _leave_removed(self) -> None:
        log.warning("this node was removed from mesh %s", self.mesh_id)
        self.removed_from_mesh = True
        for peer in list(self.peers.values()):
            peer.link.close("removed")
        self.on_change()

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        next_ping = next_save = next_rtt = 0.0
        while True:
            now = self.clock()
            if self.membership is not None and not self.removed_from_mesh:
                self._tick(now)
                if now >= next_ping:
                    self._ping_all(now)
                    next_ping = now + PING_INTERVAL
                if now >= next_rtt:
                    self._report_rtt(now)
                    next_rtt = now + RTT_REPORT_INTERVAL
                if now >= next_save:
                    self._save()
                    next_save = now + SAVE_INTERVAL
            await asyncio.sleep(TICK_SECONDS)

    def _tick(self, now: float) -> None:
        if self.membership.expire(now):
            self.on_change()
        for peer_id, message in self.membership.messages_to_send(now):
            peer = self.peers.get(peer_id)
            if peer is not None:
                asyncio.ensure_future(self._send(peer, message))
        self._dial_missing(now)

    def _ping_all(self, now: float) -> None:
        for peer in list(self.peers.values()):
            asyncio.ensure_future(self._send(peer, {"type": "ping", "t": now}))

    def _report_rtt(self, now: float) -> None:
        rtt = {peer.node_id: round(peer.rtt_ms, 2) for peer in self.peers.values() if peer.rtt_ms is not None}
        self.membership.update_own(now, rtt_ms=rtt, **self.own_record())

    def refresh_own_record(self) -> None:
        """Call when what `own_record()` returns has changed (e.g. capacity, role)."""
        if self.membership is not None:
            self.membership.update_own(self.clock(), **self.own_record())
            self.on_change()

    def _dial_missing(self, now: float) -> None:
        for address, node_id in self._dial_targets():
            if now - self.last_dial.get(address, -DIAL_RETRY_SECONDS) >= DIAL_RETRY_SECONDS:
                self.last_dial[address] = now
                asyncio.ensure_future(self._dial(address, node_id))

    def _dial_targets(self) -> list[tuple[tuple[str, int], str | None]]:
        now = self.clock()
        targets = []
        for record in self.membership.alive_records(now):
            if record.node_id != self.node_id and record.node_id not in self.peers \
                    and self.node_id < record.node_id:
                targets += [(tuple(address), record.node_id) for address in record.addresses[:1]]
        if not self.peers:  # alone: try where members were last seen
            targets += [(tuple(address), None) for address in self.memory.peer_addresses
                        if tuple(address) not in self.advertised_addresses()]
        return targets

    async def _dial(self, address: tuple[str, int], node_id: str | None) -> None:
        try:
            link = await self.control_transport.connect(address, 3.0)
        except (OSError, asyncio.TimeoutError, ConnectionError):
            return
        try:
            identity = await handshake.dial(link, self.credentials, self.mesh_id, self.mesh_secret)
        except (HandshakeError, LinkClosed, FrameError, TimeoutError) as error:
            log.info("could not link with %s: %s", address, error)
            link.close("handshake failed")
            if REMOVED_REASON in str(error):
                self._leave_removed()
            return
        if identity.node_id == self.node_id:
            link.close("that is us")
            return
        self._add_peer(identity, link, dialled_by_us=True)

    # --- data plane ----------------------------------------------------------------------

    async def open_data_link(self, node_id: str, purpose: str) -> MessageLink:
        """An authenticated TLS connection to a member, for `purpose` ("rpc", "api")."""
        record = self._alive_record(node_id)
        if record is None or not record.addresses:
            raise LinkClosed(f"node {node_id} is not in the mesh")
        last_error: Exception | None = None
        for address in record.addresses:
            try:
                link = await self.data_transport.connect(tuple(address), 5.0)
            except (OSError, asyncio.TimeoutError) as error:
                last_error = error
                continue
            try:
                await handshake.dial(link, self.credentials, self.mesh_id, self.mesh_secret,
                                     purpose=purpose, expected_node_key=bytes.fromhex(record.public_key))
            except (HandshakeError, LinkClosed, FrameError, TimeoutError) as error:
                link.close("handshake failed")
                raise LinkClosed(f"data plane to {node_id}: {error}") from None
            return link
        raise LinkClosed(f"cannot reach node {node_id}: {last_error}")

    def _alive_record(self, node_id: str) -> NodeRecord | None:
        if self.membership is None:
            return None
        return next((record for record in self.membership.alive_records(self.clock())
                     if record.node_id == node_id), None)

    def alive_records(self) -> list[NodeRecord]:
        return [] if self.membership is None else self.membership.alive_records(self.clock())

    # --- commands ------------------------------------------------------------------------

    def mint_invite(self, expires_in: int) -> InviteToken:
        expires_at = 0 if expires_in == 0 else int(self.wall_clock()) + expires_in
        token = InviteToken(mesh_id=self.mesh_id, join_secret=self.credentials.random_bytes(16),
                            inviter_key=self.credentials.public_key,
                            addresses=tuple(self.advertised_addresses()), expires_at=expires_at)
        return token.signed(self.credentials.sign)

    def revoke(self, token: InviteToken) -> None:
        if token.mesh_id != self.mesh_id:
            raise ValueError(f"that invite is for another mesh ({token.mesh_id})")
        self.membership.revoke_token(self.clock(), token.token_id)
        self.memory.revoked = sorted(self.membership.revoked_token_ids)
        self._save()
        self.on_change()

    def remove(self, node_id: str) -> None:
        if node_id == self.node_id:
            raise ValueError("a node cannot remove itself; quit it instead")
        if not NODE_ID.fullmatch(node_id):
            raise ValueError(f"not a node id: {node_id[:40]!r} ({NODE_ID_LENGTH} hex characters, "
                             "as in /api/status)")
        known = set(self.memory.members) | set(self.membership.peer_states(self.clock())) \
            | self.membership.removed_node_ids
        if node_id not in known:
            raise ValueError(f"no node {node_id} is known in this mesh")
        self.membership.remove(self.clock(), node_id)
        peer = self.peers.get(node_id)
        if peer is not None:
            asyncio.ensure_future(self._tell_removed(peer))
        self.memory.removed = sorted(self.membership.removed_node_ids)
        self._save()
        self.on_change()

    async def _tell_removed(self, peer: Peer) -> None:
        if peer.told_removed:
            return
        peer.told_removed = True
        await self._send(peer, {"type": "removed"})
        await asyncio.sleep(REFUSAL_LINGER_SECONDS)  # let it arrive before the link goes
        peer.link.close("removed from the mesh")

    async def leave(self) -> None:
        """Tells every peer we are going, so they drop us at once, then closes the links."""
        if self.membership is not None and self.peers:
            self.membership.leave(self.clock())
            sends = [self._send(self.peers[peer_id], message)
                     for peer_id, message in self.membership.messages_to_send(self.clock())
                     if peer_id in self.peers]
            await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 2.0)
            await asyncio.sleep(0.05)  # let QUIC put the datagrams on the wire
        self._save()
        for peer in list(self.peers.values()):
            peer.link.close("leaving")
        await self.control_transport.stop()
        await self.data_transport.stop()

    def _save(self) -> None:
        if self.membership is not None:
            self.memory.removed = sorted(self.membership.removed_node_ids)
            self.memory.revoked = sorted(self.membership.revoked_token_ids)
            alive = self.membership.alive_records(self.clock())
            self.memory.remember_peer_addresses(
                [tuple(address) for record in alive if record.node_id != self.node_id
                 for address in record.addresses])
        try:
            save_memory(self.settings.home, self.memory)
        except OSError as error:
            log.warning("cannot save mesh state: %s", error)

    # --- status --------------------------------------------------------------------------

    def status(self) -> dict:
        if self.membership is None:
            return mesh_status(None, self.port, self.removed_from_mesh, [], [], self.refusals) | {"mesh": None}
        now = self.clock()
        states = self.membership.peer_states(now)
        alive = self.membership.alive_records(now)
        peers = [self._peer_status(record, states.get(record.node_id, {}))
                 for record in alive if record.node_id != self.node_id]
        return mesh_status(self.mesh_id, self.port, self.removed_from_mesh, alive, peers, self.refusals)

    def _peer_status(self, record: NodeRecord, state: dict) -> dict:
        peer = self.peers.get(record.node_id)
        return peer_status(record, state, peer.rtt_ms if peer is not None else None, peer is not None)
