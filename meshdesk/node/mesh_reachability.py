"""Where peers see this node from, and what of it goes into its gossip record (part of
MeshService; the tally and its defences against a lying member are `core.reachability`'s)."""

from __future__ import annotations

import logging

from meshdesk.core.reachability import Direction
from meshdesk.node.handshake import PeerIdentity

log = logging.getLogger(__name__)


class MeshReachability:
    """Mixed into MeshService: reports from the handshakes, the record's addresses, the status."""

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
            fields = {**self.own_record(), "addresses": tuple(self.record_addresses())}
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
