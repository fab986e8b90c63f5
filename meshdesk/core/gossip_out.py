"""What a node tells each peer (part of `core.membership.Membership`): the records the peer
lacks, the authority and want entries it has not had, heartbeats and a digest, cut to fit frames."""

from __future__ import annotations

from meshdesk.core.gossip_message import GossipMessage
from meshdesk.core.node_record import NodeRecord


def worth_sending(record: NodeRecord, peer_has: dict[str, int]) -> bool:
    """Newer than the peer's copy; a farewell only to peers that know the node at all."""
    if record.leaving and record.node_id not in peer_has:
        return False
    return record.generation > peer_has.get(record.node_id, -1)


class GossipOut:
    """Mixed into Membership, whose state it reads."""

    def messages_to_send(self, now: float) -> list[tuple[str, dict]]:
        """(peer id, message) pairs due now: every connected peer once per heartbeat interval,
        and at once after a local change, a new connection, or news from another peer. What
        one peer is told may take several messages, each within the frame limit."""
        due = self._schedule.take_due(now, self._connected)
        recipients = sorted(due & self._connected - self._removed)
        if not recipients:
            return []
        shareable = self._shareable_records(now)
        sends = []
        for peer in recipients:
            parts, _ = self._message_for(peer, shareable).split()
            sends += [(peer, part.to_wire()) for part in parts]
        return sends

    def _message_for(self, peer_id: str, shareable: list[NodeRecord]) -> GossipMessage:
        has = self._known_by_peer.setdefault(peer_id, {})
        records = tuple(record for record in shareable if worth_sending(record, has))
        for record in records:
            has[record.node_id] = record.generation  # optimistic; the peer's next digest corrects it
        sent = self._entries_sent.setdefault(peer_id, set())
        entries = tuple(entry for entry in self._ledger.entries() if entry.key not in sent)
        sent.update(entry.key for entry in entries)  # links deliver in order, or are made again
        relayed_ids = [record.node_id for record in shareable] + [peer_id]  # the peer's own, for restarts
        heartbeats = {node_id: self._heartbeat_of(node_id) for node_id in relayed_ids}
        return GossipMessage(
            records=records,
            heartbeats={node_id: count for node_id, count in heartbeats.items() if count >= 0},
            generations={i: r.generation for i, r in [(self._own.node_id, self._own), *self._records.items()]},
            entries=entries,
            authority=self._ledger.authority,
            wants=self._wants_for(peer_id),
        )

    def _heartbeat_of(self, node_id: str) -> int:
        own = node_id == self._own.node_id
        return self._schedule.heartbeat if own else self._heartbeats.heartbeat_of(node_id)

