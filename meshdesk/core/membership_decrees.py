"""Removals, revocations and admin grants made by this node, and learning the mesh's
authority (part of `core.membership.Membership`; the rules are `core.authority`'s)."""

from __future__ import annotations

from meshdesk.core import authority
from meshdesk.core.authority import Entry, NotAuthorised, make_entry
from meshdesk.core.gossip_values import MembershipError, read_node_id, read_text


class Decrees:
    """Mixed into Membership: it holds `_ledger`, `_own`, `_sign`, `_connected`, `_learn_from`."""

    def remove(self, now: float, node_id: str) -> None:
        """Removes a node from the whole mesh, for good; NotAuthorised unless we are the
        founder or an admin."""
        node_id = read_node_id(node_id)
        if node_id == self._own.node_id:
            raise ValueError("a node cannot remove itself; use leave()")
        if node_id == self._ledger.authority_id():
            raise NotAuthorised("the mesh's founder cannot be removed")
        self._decree(now, authority.REMOVE, node_id)

    def revoke_token(self, now: float, token_id: str) -> None:
        """Revokes an invite mesh-wide; NotAuthorised unless we are the founder or an admin."""
        self._decree(now, authority.REVOKE, read_text(token_id, "token id", authority.MAX_TOKEN_ID_LENGTH,
                                                      empty_ok=False))

    def grant_admin(self, now: float, public_key: bytes) -> None:
        """Names the node with `public_key` an admin; NotAuthorised unless we founded the mesh."""
        if authority.key_id(public_key.hex()) is None:
            raise ValueError("an admin is named by its 32-byte node key")
        self._decree(now, authority.ADMIN, public_key.hex())

    def restore_entries(self, now: float, wires: list) -> None:
        """Entries remembered from an earlier run; any that no longer parse or pass are ignored."""
        for wire in wires if isinstance(wires, list) else []:  # a hand-edited file may hold anything
            try:
                self._ledger.admit(Entry.from_wire(wire))
            except MembershipError:
                self._ledger.ignored += 1
        self._observe(now)

    def _decree(self, now: float, kind: str, subject: str) -> None:
        if (kind, subject) in self._ledger:
            return
        refusal = self._ledger.refusal(kind, self._own.public_key)
        if refusal is not None:
            raise NotAuthorised(refusal)
        self._observe(now)
        entry = make_entry(kind, subject, bytes.fromhex(self._own.public_key), self._clock_ms(now), self._sign)
        if not self._ledger.admit(entry):
            raise NotAuthorised(f"this node cannot {kind} {subject[:40]}")
        self._make_due(now, self._connected)

    def _learn_authority(self, sender_id: str, key: str | None) -> None:
        if self._ledger.authority is None and sender_id == self._learn_from and key is not None \
                and authority.key_id(key) is not None:
            self._ledger.authority = key

