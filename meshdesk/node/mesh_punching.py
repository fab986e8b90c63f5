"""Hole punching and the data plane over QUIC streams (part of MeshService).

Peer control decides whom to ask, whom to introduce and when to punch (`core.hole_punch`);
this carries out a `Punch`: datagrams from the mesh port towards the member's public address,
which open our router for its packets, and a dial there from the same port that expects the
member's key. The member does the same towards us at the same moment.

A member reached that way has no TCP path (its router lets in only the flow it punched), so its
data links run as streams of the control link's QUIC connection (`adapters.quic.streams`): so do
those of any member whose control link does not come from an address its record carries (it
dialled us from behind a NAT), and those whose TLS dial finds nothing listening.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.hole_punch import Punch
from meshdesk.node.handshake import PeerIdentity
from meshdesk.node.interfaces import LinkClosed, MessageLink
from meshdesk.node.linking import Dial, HandshakeFailed, Unreachable, connect_and_authenticate

log = logging.getLogger(__name__)

PUNCH_DIAL_TIMEOUT = 6.0    # the dial retries its first packet while the routers open
PUNCH_DATAGRAMS = 15
PUNCH_DATAGRAM_GAP = 0.2    # seconds: the punch datagrams cover the dial's first three
STREAM_OPENING_TIMEOUT = 5.0


class MeshPunching:
    """Mixed into MeshService."""

    streamed_to: set[str]  # members whose data plane is a QUIC stream (said once in the log)

    # --- punching ------------------------------------------------------------------------

    def _punch_towards(self, punch: Punch) -> None:
        record = self._alive_record(punch.peer_id)
        if record is None or self.mesh_secret is None:
            return
        if not self.control_transport.punch(punch.address):
            log.info("cannot punch towards %s at %s from the mesh port", punch.peer_id, punch.address)
            return
        log.info("punching towards %s at %s:%d", punch.peer_id, *punch.address)
        self._spawn(self._send_punches(punch))
        self._spawn(self._punch_dial(punch, bytes.fromhex(record.public_key)))

    def _punch_needless(self, peer_id: str) -> bool:
        """Linked with `peer_id` directly already (or stopping): no more punching towards it."""
        link = None if self.control is None else self.control.link_to(peer_id)
        return self.control is None or self._stopped or (link is not None and not link.relayed)

    async def _send_punches(self, punch: Punch) -> None:
        for _ in range(PUNCH_DATAGRAMS):
            await asyncio.sleep(PUNCH_DATAGRAM_GAP)
            if self._punch_needless(punch.peer_id):
                return
            self.control_transport.punch(punch.address)

    async def _punch_dial(self, punch: Punch, public_key: bytes) -> None:
        dial = Dial(self.mesh_id, self.keys.current, expected_node_key=public_key)
        try:
            link, identity = await connect_and_authenticate(self.control_transport, punch.address,
                                                            self.credentials, dial, PUNCH_DIAL_TIMEOUT)
        except (Unreachable, HandshakeFailed) as failure:
            if not self._punch_needless(punch.peer_id):
                log.info("the punch towards %s at %s:%d failed: %s", punch.peer_id, *punch.address, failure)
            return
        log.info("punched a direct link with %s at %s:%d", punch.peer_id, *punch.address)
        self._link_up(identity, link, dialled_by_us=True)

    # --- data streams over QUIC ----------------------------------------------------------

    def _accept_streams(self, identity: PeerIdentity, link: MessageLink) -> None:
        """A control link the node keeps: data streams on its connection are the peer's."""
        if hasattr(link, "accept_streams"):
            link.accept_streams(lambda stream: self._accepted_stream(identity, stream))

    async def _accepted_stream(self, identity: PeerIdentity, stream: MessageLink) -> None:
        try:
            async with asyncio.timeout(STREAM_OPENING_TIMEOUT):
                opening = await stream.receive()
            purpose = opening.get("purpose") if opening.get("type") == "open" else None
            handler = self.data_plane_handlers.get(purpose) if isinstance(purpose, str) else None
            if handler is None or not self._still_member(identity.node_id):
                stream.close("no such channel")
                return
            await handler(PeerIdentity(dataclasses.replace(identity.hello, purpose=purpose)), stream)
        except (LinkClosed, PeerProtocolError, ConnectionError, TimeoutError) as error:
            log.info("a data stream from %s ended: %s", identity.node_id, error or type(error).__name__)
            stream.close("protocol error")
        except Exception:  # our bug: this stream ends, the mesh goes on
            log.exception("a data stream from %s failed", identity.node_id)
            stream.close("internal error")

    def _still_member(self, peer_id: str) -> bool:
        return self.control is not None and not self.removed_from_mesh \
            and peer_id not in self.membership.removed_node_ids and self.control.link_to(peer_id) is not None

    def _quic_link_to(self, node_id: str) -> MessageLink | None:
        state = None if self.control is None else self.control.link_to(node_id)
        link = None if state is None else self.links.link(state.link)
        return link if link is not None and hasattr(link, "open_stream") and not link.closed else None

    async def _data_stream(self, node_id: str, control_link, purpose: str, why: str) -> MessageLink:
        if node_id not in self.streamed_to:
            self.streamed_to.add(node_id)
            log.info("the data plane to %s runs over QUIC (%s)", node_id, why)
        stream = await control_link.open_stream()
        await stream.send({"type": "open", "purpose": purpose})
        return stream
