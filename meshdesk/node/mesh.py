"""The mesh: creating or joining one, and the IO loop around this node's peer control.

Each pair of members keeps one authenticated control link (QUIC). What travels on the links,
whom to dial, and when, are decided by `core.peer_control.PeerControl` (sans-IO); gossip is
`core.membership`'s. This module only moves bytes and time: it reads every link, carries out
the machine's outputs, and sleeps until the machine's next deadline. Every task it starts is
held by one TaskGroup in `run()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshdesk.core import peer_control as pc
from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.identity import mesh_id_for, node_id_for
from meshdesk.core.lan_discovery import LanCandidates
from meshdesk.core.membership import Membership, NodeRecord
from meshdesk.core.reachability import Reachability
from meshdesk.node.handshake import Credentials, PeerIdentity
from meshdesk.node.interfaces import LinkClosed, MessageLink, SecretStore
from meshdesk.node.linking import HandshakeFailed, Unreachable
from meshdesk.node.mesh_admission import MeshAdmission
from meshdesk.node.mesh_commands import JoinRefused, MeshCommands
from meshdesk.node.mesh_secrets import MeshSecrets, dial_with_secrets

__all__ = ["JoinRefused", "MeshService", "MeshSettings"]
from meshdesk.node.mesh_links import LinkTable
from meshdesk.node.mesh_punching import MeshPunching
from meshdesk.node.mesh_reachability import MeshReachability
from meshdesk.node.mesh_relays import MeshRelays
from meshdesk.node.mesh_state import MeshMemory, load_memory, restore_decisions, save_memory_or_warn
from meshdesk.node.mesh_status import MeshStatus, status_of

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 3.0
MIN_TIMER_SECONDS = 0.005  # never spin, whatever a deadline says
AFTER_BUG_SECONDS = 1.0    # a bug in the loop is logged, then the loop waits this long


@dataclass
class MeshSettings:
    home: Path
    bind_host: str = "0.0.0.0"
    bind_port: int = 0
    advertise_hosts: list[str] = field(default_factory=list)
    relays: list[tuple[str, int]] = field(default_factory=list)  # named with --relay
    serve_relay_port: int | None = None  # --serve-relay: run a relay for the mesh on this port


class MeshService(MeshAdmission, MeshCommands, MeshReachability, MeshPunching, MeshRelays):
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
        self.keys = MeshSecrets(secrets)
        self.control: pc.PeerControl | None = None
        self.links = LinkTable()
        self.port: int | None = None
        self.refusals: list[dict] = []
        self.reachability = Reachability()  # where peers see us from (core.reachability)
        self.lan = LanCandidates()           # members and inviters heard by mDNS
        self.inviter_keys: dict[str, bytes] = {}  # of the invites we are joining by
        self.data_plane_handlers: dict[str, Callable] = {}
        self.streamed_to: set[str] = set()
        self.relay_clients, self.relay_server = {}, None
        self.on_change: Callable[[], None] = lambda: None
        self._group: asyncio.TaskGroup | None = None
        self._stopped = False         # run() has ended: no new links, no new tasks
        self._before_run: list = []   # coroutines started when run() opens its TaskGroup
        self._wake = asyncio.Event()  # an input may have moved the next deadline

    # --- starting ------------------------------------------------------------------------

    async def bind(self) -> int:
        """Listens for QUIC (UDP) and TLS (TCP) on one port number; returns it."""
        preferred = self.settings.bind_port or self.memory.port or 0
        for attempt in range(20):
            port = preferred if attempt == 0 else 0
            try:
                self.port = await self.control_transport.start(self.settings.bind_host, port, self._accepted)
                await self.data_transport.start(self.settings.bind_host, self.port, self._accepted_data)
                log.info("mesh port %d bound (QUIC and TLS)", self.port)
                return self.port
            except OSError:
                await self.control_transport.stop()
                if self.settings.bind_port:
                    raise
        raise OSError("no port number is free for both UDP and TCP")

    def load_or_create_mesh(self) -> bool:
        """Resumes the stored mesh, or founds a new one; True when founded now."""
        if self.keys.open(self.memory.mesh_id):
            self._enter_mesh(self.memory.mesh_id)
            return False
        secret = self.credentials.random_bytes(32)
        self.keys.start_over(secret)
        self._enter_mesh(mesh_id_for(secret), founded=True)
        return True

    @property
    def mesh_secret(self) -> bytes | None:
        return self.keys.current if self.control is not None else None

    def _enter_mesh(self, mesh_id: str, founded: bool = False, inviter: str | None = None) -> None:
        """`founded`: this node's key becomes the mesh's authority; `inviter`: the member we
        joined through, whose word on the authority we take."""
        if self.memory.mesh_id != mesh_id:
            self.memory.forget_mesh()
            self.links.close_all("left for another mesh")
        if founded:
            self.memory.authority = self.credentials.public_key.hex()
        self.memory.mesh_id = mesh_id
        self.memory.port = self.port
        self.memory.advertised = [list(address) for address in self.advertised_addresses()]
        if self.node_id not in self.memory.members:
            self.memory.members.append(self.node_id)
        now = self.clock()
        membership = Membership(self._record(generation=int(self.wall_clock() * 1000)),
                                sign=self.credentials.sign, verify=self.credentials.verify,
                                authority_key=self.memory.authority, learn_authority_from=inviter)
        restore_decisions(membership, self.memory, now)
        self.control = pc.PeerControl(membership, now, self.advertised_addresses())
        self.control.greeting = None if self.keys.latest is None else self.keys.latest.to_wire()
        self._remember_addresses([])
        self._save()

    def _record(self, generation: int) -> NodeRecord:
        return NodeRecord(node_id=self.node_id, addresses=tuple(self.record_addresses()),
                          relayed_addresses=tuple(self.relayed_addresses()), relays=tuple(self.relays_offered()),
                          public_key=self.credentials.public_key.hex(), generation=generation,
                          rtt_ms={}, **self.own_record())

    @property
    def mesh_id(self) -> str | None:
        return self.memory.mesh_id

    @property
    def membership(self) -> Membership | None:
        return None if self.control is None else self.control.membership

    @property
    def removed_from_mesh(self) -> bool:
        return self.control is not None and self.control.removed_from_mesh

    def _remember_addresses(self, addresses: list[tuple[str, int]]) -> None:
        self.memory.remember_peer_addresses(addresses)
        if self.control is not None:
            self.control.set_fallback_addresses(self.memory.peer_addresses)

    # --- links ---------------------------------------------------------------------------

    def _link_up(self, identity: PeerIdentity, link: MessageLink, dialled_by_us: bool) -> None:
        if self.control is None or self._stopped:
            link.close("not in a mesh" if self.control is None else "stopping")
            return
        link_id = self.links.add(identity, link)
        if identity.node_id not in self.memory.members:
            self.memory.members.append(identity.node_id)
        relayed = self.through_relay(link.remote_address, identity.node_id)
        log.info("linked with %s (%s)%s", identity.hello.name, identity.node_id, " through a relay" if relayed else "")
        if not relayed:  # what a relayed peer sees is the relay, not us
            self._note_observed(identity, dialled_by_us)
        self._accept_streams(identity, link)
        self._spawn(self._read(link_id, link))
        self._spawn(self.links.write_until_closed(link_id))
        self._carry_out(self.control.link_up(self.clock(), link_id, identity.node_id, dialled_by_us,
                                             link.remote_address, relayed))

    async def _read(self, link_id: int, link: MessageLink) -> None:
        try:
            while True:
                message = await link.receive()
                self._carry_out(self.control.message_received(self.clock(), link_id, message))
        except (LinkClosed, ConnectionError):
            pass
        except PeerProtocolError as error:  # bytes that are not frames: the link cannot go on
            log.warning("dropping %s: it sent %s", self.links.peer_id(link_id), error)
            link.close("protocol error")
        except Exception:  # our bug: this link ends, the mesh goes on
            log.exception("handling a message from %s failed", self.links.peer_id(link_id))
            link.close("internal error")
        # Not on cancellation: when the node stops, leave() still says goodbye on these links.
        peer_id = self.links.peer_id(link_id)
        self.links.remove(link_id)
        self._carry_out(self.control.link_down(self.clock(), link_id))
        self._link_gone(peer_id)

    async def _dial(self, address: tuple[str, int], node_id: str | None) -> None:
        control = self.control
        try:
            link, identity = await dial_with_secrets(self.control_transport, address, self.credentials,
                                                     self.mesh_id, self.keys.for_dialling(), DIAL_TIMEOUT)
        except (Unreachable, HandshakeFailed) as failure:
            quiet = isinstance(failure, Unreachable)  # while alone this repeats every few seconds
            log.log(logging.DEBUG if quiet else logging.INFO, "could not link with %s: %s", address, failure)
            if isinstance(getattr(failure, "cause", None), PeerProtocolError):
                self._carry_out(control.dial_refused(self.clock(), failure.cause))
            return
        finally:
            control.dial_ended(self.clock(), address)
        if identity.node_id == self.node_id:
            link.close("that is us")
        else:
            self._link_up(identity, link, dialled_by_us=True)

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for work in self._before_run:
                    group.create_task(work)
                self._before_run.clear()
                while True:
                    await self._sleep_until_due(self._on_timer())
        finally:
            self._group, self._stopped = None, True

    def _on_timer(self) -> float | None:
        """Carries out what is due; returns the next deadline (None: wait for an input)."""
        if self.control is None:
            return None
        try:
            self._carry_out(self.control.handle_timer(self.clock()))
            return self.control.next_deadline()
        except Exception:  # our bug: say so, and keep the mesh going
            log.exception("the mesh loop failed; retrying")
            return self.clock() + AFTER_BUG_SECONDS

    async def _sleep_until_due(self, deadline: float | None) -> None:
        self._wake.clear()
        delay = None if deadline is None else max(MIN_TIMER_SECONDS, deadline - self.clock())
        try:  # not wait_for: on 3.11 it can swallow a cancellation that races the wake-up
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _spawn(self, work) -> None:
        if self._stopped:
            work.close()  # never started: the node is stopping
        elif self._group is None:
            self._before_run.append(guarded(work))
        else:
            self._group.create_task(guarded(work))

    def _carry_out(self, outputs: list[pc.Output]) -> None:
        changed = False
        for output in outputs:
            if isinstance(output, pc.SendMessage):
                self.links.send(output.link, output.message)
            elif isinstance(output, pc.CloseLink):
                self.links.close(output.link, output.reason)
            elif isinstance(output, pc.DialAddress):
                self._spawn(self._dial(output.address, output.node_id))
            elif isinstance(output, pc.SaveState):
                self._save()
            elif isinstance(output, pc.RefreshOwnRecord):
                self.refresh_own_record()
            elif isinstance(output, pc.Punch):
                self._punch_towards(output)
            elif isinstance(output, pc.PeerBrokeProtocol):
                log.warning("dropping %s: it sent %s", output.peer_id, output.error)
            elif isinstance(output, pc.RekeyReceived):
                self._rekey_received(output.peer_id, output.message)
            elif isinstance(output, pc.RemovedFromMesh):
                log.warning("this node was removed from mesh %s", self.mesh_id)
            changed = changed or isinstance(output, (pc.PeersChanged, pc.RemovedFromMesh))
        self._wake.set()
        if changed:
            self.on_change()

    def alive_records(self) -> list[NodeRecord]:
        return [] if self.membership is None else self.membership.alive_records(self.clock())

    def _save(self) -> None:
        if self.membership is not None:
            self.memory.remember_decisions(self.membership)
            alive = self.membership.alive_records(self.clock())
            self._remember_addresses([tuple(address) for record in alive if record.node_id != self.node_id
                                      for address in (*record.addresses, *record.relayed_addresses)])
        save_memory_or_warn(self.settings.home, self.memory)

    def status(self) -> MeshStatus:
        return status_of(self)


async def guarded(work) -> None:
    """Runs a task of the mesh's TaskGroup; a bug in one is logged and never stops the mesh."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("a mesh task failed")
