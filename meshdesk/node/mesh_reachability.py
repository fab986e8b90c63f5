"""Where peers see this node from, and what of it goes into its gossip record (part of
MeshService; the tally and its defences against a lying member are `core.reachability`'s);
and members and inviters heard on the LAN by mDNS (`core.lan_discovery`, `adapters.mdns`)."""

from __future__ import annotations

import logging

from meshdesk.core import lan_discovery
from meshdesk.core.reachability import Direction, usable
from meshdesk.node.handshake import PeerIdentity
from meshdesk.node.linking import Dial, HandshakeFailed, Unreachable, connect_and_authenticate

log = logging.getLogger(__name__)

LAN_DIAL_TIMEOUT = 3.0  # a neighbour answers at once, or it is not there


class MeshReachability:
    """Mixed into MeshService: reports from the handshakes, the record's addresses, the status."""

    def advertised_addresses(self) -> list[tuple[str, int]]:
        """This machine's own addresses, on the mesh port."""
        return [(host, self.port) for host in self.settings.advertise_hosts]

    def record_addresses(self) -> list[tuple[str, int]]:
        """What our gossip record carries: our own addresses first, since a LAN peer reaches us
        there and the data plane (TCP) can only dial those; then the addresses peers confirm
        they reached us at (a port forward, a one-to-one NAT), which a peer further out needs."""
        own = self.advertised_addresses()
        self.reachability.local_addresses = set(own)
        return own + self.reachability.advertised(self.clock())

    def refresh_own_record(self) -> None:
        """Call when what `own_record()` returns has changed (e.g. capacity, role); also every
        few seconds, with the RTTs, which drops addresses whose reports lapsed."""
        if self.control is not None:
            self.adopt_member_relays()
            fields = {**self.own_record(), "addresses": tuple(self.record_addresses()),
                      "relayed_addresses": tuple(self.relayed_addresses()), "relays": tuple(self.relays_offered())}
            self._carry_out(self.control.update_own(self.clock(), fields))

    def _note_observed(self, identity: PeerIdentity, dialled_by_us: bool) -> None:
        """The peer's word on where it sees us; a newly confirmed address goes into our record
        at once, and a lapsed one leaves it at the next refresh (every few seconds)."""
        self.reachability.reporter_back(identity.node_id)
        if identity.observed is None:
            return
        before = self.reachability.advertised(self.clock())
        direction = Direction.OUTBOUND if dialled_by_us else Direction.INBOUND
        if not self.reachability.report(self.clock(), identity.node_id, identity.observed, direction):
            log.debug("%s sees us at %s, which cannot be ours", identity.node_id, identity.observed)
        elif self.reachability.advertised(self.clock()) != before:
            log.info("peers confirm they reach us at %s", self.reachability.advertised(self.clock()))
            self.refresh_own_record()

    def _link_gone(self, peer_id: str | None) -> None:
        """A control link closed: the peer's report lapses, unless another link to it is up."""
        if peer_id is not None and self.control.link_to(peer_id) is None:
            self.reachability.reporter_gone(self.clock(), peer_id)

    def observed_wire(self) -> tuple[dict, ...]:
        """Where peers see us from, for the node's status (`core.reachability.Observed`)."""
        return tuple(entry.to_wire() for entry in self.reachability.observed(self.clock()))

    # --- the LAN (mDNS) ------------------------------------------------------------------

    def lan_hosts(self) -> list[str]:
        """Our addresses a LAN neighbour could dial (none when bound to loopback only)."""
        return [host for host, port in self.advertised_addresses() if usable((host, port))]

    def lan_announcement(self) -> dict[str, str]:
        """Our mDNS TXT properties, with a fresh salt: recognisable only by those with our key."""
        return lan_discovery.announcement(self.credentials.public_key,
                                          self.credentials.random_bytes(lan_discovery.SALT_BYTES))

    def lan_heard(self, properties: dict, hosts: list[str], port: int) -> None:
        """An mDNS announcement: if it is a member's or an inviter's, its addresses are
        candidates to dial (the handshake decides who it really is)."""
        heard = lan_discovery.heard(properties, hosts, port)
        keys = self._lan_keys()
        node_id = None if heard is None else lan_discovery.recognise(heard, keys)
        if node_id is None:
            return
        if not set(heard.addresses) <= set(self.lan.addresses_of(node_id)):
            log.info("heard %s on the LAN at %s", node_id, heard.addresses)
        self.lan.heard_from(node_id, heard.addresses)
        self._dial_on_lan(node_id, keys[node_id])

    def _lan_keys(self) -> dict[str, bytes]:
        """Whom we can recognise: the members whose records we hold, and inviters we are joining."""
        keys = dict(self.inviter_keys)
        for record in self.alive_records():
            keys[record.node_id] = bytes.fromhex(record.public_key)
        keys.pop(self.node_id, None)  # our own announcement, heard back
        return keys

    def _dial_on_lan(self, node_id: str, public_key: bytes) -> None:
        """A member we hold but have no link to is dialled at its LAN addresses, by the lower id
        as peer control's dials are (both hear each other); an inviter waits for the join."""
        if self.control is None or self._stopped or self.control.link_to(node_id) is not None \
                or self.node_id > node_id or node_id not in {r.node_id for r in self.alive_records()}:
            return
        addresses = self.lan.take_dial(self.clock(), node_id)
        if addresses:
            self._spawn(self._dial_in_turn(addresses, node_id, public_key))

    async def _dial_in_turn(self, addresses: list[tuple[str, int]], node_id: str, public_key: bytes) -> None:
        """Each address until one links; the dial expects the member's key, so an address
        someone else announced gets nothing from us."""
        for address in addresses:
            if self.control is None or self._stopped or self.control.link_to(node_id) is not None:
                return
            dial = Dial(self.mesh_id, self.keys.current, expected_node_key=public_key)
            try:
                link, identity = await connect_and_authenticate(self.control_transport, address,
                                                                self.credentials, dial, LAN_DIAL_TIMEOUT)
            except (Unreachable, HandshakeFailed) as failure:
                log.info("could not link with %s at %s on the LAN: %s", node_id, address, failure)
                continue
            self._link_up(identity, link, dialled_by_us=True)
            return
