"""The models the mesh wants served, as this node holds them (part of `core.membership.Membership`;
the entries and their merge are `core.wants`).

Any member writes entries, by an explicit act of its user: `want` (`POST /api/serve`,
`meshdesk serve`, or a start with `--model X`) and `drop_model` (`meshdesk drop`,
`POST /api/drop`). Nothing else does: in particular a node's own record still flagging a model
`wanted` never undoes a drop (the node squares its own asks with the ledger:
`node.own_state.settle_wants`).
"""

from __future__ import annotations

from dataclasses import replace

from meshdesk.core.gossip_values import MembershipError
from meshdesk.core.wants import WantEntry, WantsLedger


class Wants:
    """Mixed into Membership: it holds `_wants` (a WantsLedger), `_own`, `_connected`."""

    def _init_wants(self) -> None:
        self._wants = WantsLedger()
        self._wants_sent: dict[str, dict] = {}  # peer -> digest -> stamp it has had from us or sent us

    @property
    def wants(self) -> WantsLedger:
        return self._wants

    def want(self, now: float, digest: str) -> WantEntry:
        """A fresh want for a model our own record advertises (with its split options). Raises
        ValueError when our record has no such model."""
        advert = next((model for model in self._own.models if model.digest == digest), None)
        if advert is None:
            raise ValueError(f"this node advertises no model with digest {digest[:16]}")
        held = self._wants.get(digest)
        if held is not None and held.wanted and not advert.force_split:  # keep the seeder's --split
            advert = replace(advert, split=held.advert.split, tensor_split=held.advert.tensor_split)
        return self._write_want(now, advert, True)

    def drop_model(self, now: float, digest: str) -> WantEntry:
        """Drops a model the mesh wants, for every node. Raises ValueError when it is not wanted."""
        held = self._wants.get(digest)
        if held is None or not held.wanted:
            raise ValueError(f"the mesh does not serve a model with digest {digest[:16]}")
        return self._write_want(now, held.advert, False)

    def restore_wants(self, now: float, wires: list) -> None:
        """Entries remembered from an earlier run; any that no longer parse are ignored."""
        self._observe(now)
        for wire in wires if isinstance(wires, list) else []:  # a hand-edited file may hold anything
            try:
                self._wants.merge(WantEntry.from_wire(wire), self._generation_limit(now))
            except MembershipError:
                self._wants.ignored += 1

    def _write_want(self, now: float, advert, wanted: bool) -> WantEntry:
        self._observe(now)
        entry = WantEntry(advert, wanted, self._wants.next_counter(self._clock_ms(now)), self._own.node_id)
        if not self._wants.merge(entry):
            raise ValueError("the mesh holds as many models as it can; drop one first")
        self._make_due(now, self._connected)
        return entry

    def _take_wants(self, sender_id: str, entries, now: float) -> bool:
        sent = self._wants_sent.setdefault(sender_id, {})
        for entry in entries:
            sent[entry.digest] = max(sent.get(entry.digest, entry.stamp), entry.stamp)
        return self._wants.merge_all(entries, self._generation_limit(now))

    def _wants_for(self, peer_id: str) -> tuple[WantEntry, ...]:
        """The entries the peer has not had from us nor sent us (links deliver in order, or are made again)."""
        sent = self._wants_sent.setdefault(peer_id, {})
        news = tuple(entry for entry in self._wants.entries() if sent.get(entry.digest) != entry.stamp)
        sent.update({entry.digest: entry.stamp for entry in news})
        return news
