"""Who may come in, on either plane, and this node's own data-plane links (part of MeshService).

Control links (QUIC) carry gossip once authenticated; data links (TLS over TCP, or a QUIC
stream where no TCP path is: `node.mesh_punching`) carry one tunnel each, for the purpose
named in the dialler's hello ("rpc", "api"). Both planes run the same handshake and the same
admission: removals, versions, invites, mesh membership.
"""

from __future__ import annotations

import logging
import os

from meshdesk.core.admission import MeshView, admit
from meshdesk.core.data_routes import ENVIRONMENT_VARIABLE, Address, parse_data_routes, routed
from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.handshake import HandshakeError, Hello
from meshdesk.core.node_record import NodeRecord
from meshdesk.node.handshake import PeerIdentity
from meshdesk.node.interfaces import LinkClosed, MessageLink
from meshdesk.node.linking import (Dial, HandshakeFailed, Unreachable, accept_and_authenticate,
                                   connect_and_authenticate)

log = logging.getLogger(__name__)

DATA_LINK_TIMEOUT = 5.0
MAX_REFUSALS_SHOWN = 10


class MeshAdmission:
    """Mixed into MeshService: accepting links on both planes, and dialling data links."""

    data_routes: dict[Address, Address] = {}  # test-only (core.data_routes); set by read_data_routes

    def read_data_routes(self) -> None:
        """Reads MESHDESK_TEST_DATA_ROUTES once, at start; raises core.data_routes.DataRoutesError."""
        self.data_routes = parse_data_routes(os.environ.get(ENVIRONMENT_VARIABLE, ""))
        for advertised, dialled in self.data_routes.items():
            log.warning("test-only data route: dialling %s:%d for %s:%d", *dialled, *advertised)

    def _admit(self, hello: Hello) -> list[bytes]:
        """Refuses, or returns the mesh secrets this dialler may prove membership with."""
        if self.membership is None or self.removed_from_mesh:
            raise HandshakeError("this node is not in a mesh")
        view = MeshView(self.mesh_id, frozenset(self.memory.members), self.membership.removed_node_ids,
                        self.membership.revoked_token_ids, self.credentials.versions)
        admit(hello, view, self.wall_clock(), self.credentials.verify)
        known = hello.node_id in self.memory.members or hello.node_id in self.membership.peer_states(self.clock())
        return self.keys.for_dialler(known_member=known)

    def _admit_data(self, hello: Hello) -> list[bytes]:
        if hello.invite is not None:
            raise HandshakeError("invites are accepted on the control plane only")
        return self._admit(hello)

    async def _authenticated(self, link: MessageLink, admission, plane: str) -> PeerIdentity | None:
        def refused(error: Exception) -> None:  # noted at once, before the refusal lingers
            self._note_refusal(link.remote_address, f"{plane}{str(error) or 'handshake timed out'}")

        try:
            return await accept_and_authenticate(link, self.credentials, self.mesh_id or "-",
                                                 self.mesh_secret or b"", admission, on_failure=refused)
        except (PeerProtocolError, TimeoutError):
            return None

    async def _accepted(self, link: MessageLink) -> None:
        identity = await self._authenticated(link, self._admit, "")
        if identity is not None:
            self._link_up(identity, link, dialled_by_us=False)

    async def _accepted_data(self, link: MessageLink) -> None:
        identity = await self._authenticated(link, self._admit_data, "data plane: ")
        if identity is None:
            return
        handler = self.data_plane_handlers.get(identity.hello.purpose)
        if handler is None:
            link.close("no such channel")
            return
        await handler(identity, link)

    def _note_refusal(self, address, reason: str) -> None:
        log.warning("refused a peer at %s: %s", address, reason)
        entry = {"address": f"{address[0]}:{address[1]}", "reason": reason,
                 "at": round(self.wall_clock())}
        self.refusals = (self.refusals + [entry])[-MAX_REFUSALS_SHOWN:]
        self.on_refusal()  # not on_change: a stranger's knock must not make the node re-plan

    def on_refusal(self) -> None:
        """Called after each refusal; the node replaces it to tell its views."""

    async def open_data_link(self, node_id: str, purpose: str) -> MessageLink:
        """An authenticated link to a member, for `purpose` ("rpc", "api"): TLS over TCP to an
        address its record carries, or a stream of the QUIC control link when no TCP path is
        there (`node.mesh_punching`)."""
        record = self._alive_record(node_id)
        if record is None or not record.addresses:
            raise LinkClosed(f"node {node_id} is not in the mesh")
        # Test-only data routes put a delay proxy on the TLS path; a stream would go around it.
        control = None if self.data_routes else self._quic_link_to(node_id)
        addresses = [tuple(address) for address in record.addresses]
        if control is not None and control.remote_address[0] not in {host for host, _ in addresses}:
            # it is behind a NAT, which lets in only its own flows: TCP cannot reach it
            return await self._data_stream(node_id, control, purpose, f"its link comes from {control.remote_address[0]}")
        try:
            return await self._tls_data_link(record, addresses, purpose)
        except (Unreachable, HandshakeFailed) as error:
            if control is None:
                raise LinkClosed(f"cannot reach node {node_id}: {error}") from None
            return await self._data_stream(node_id, control, purpose, f"no TCP path: {error}")

    async def _tls_data_link(self, record: NodeRecord, addresses: list[Address], purpose: str) -> MessageLink:
        """Raises the last address's Unreachable or HandshakeFailed when none gives a link (one
        may be someone else's: the dial expects the member's key, and tries the next)."""
        dial = Dial(self.mesh_id, self.mesh_secret, purpose=purpose,
                    expected_node_key=bytes.fromhex(record.public_key))
        last_error: Exception | None = None
        for address in addresses:
            try:
                link, _ = await connect_and_authenticate(
                    self.data_transport, routed(address, self.data_routes), self.credentials, dial,
                    DATA_LINK_TIMEOUT)
                return link
            except (Unreachable, HandshakeFailed) as error:
                last_error = error
        raise last_error

    def _alive_record(self, node_id: str) -> NodeRecord | None:
        return next((record for record in self.alive_records() if record.node_id == node_id), None)
