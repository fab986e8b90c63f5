"""Who may remove members and revoke invites: the mesh's authority and the admins it names.

The node that founds a mesh holds its authority: its node key is the mesh's root of trust,
which every member knows (a joiner learns it from its inviter, `core.membership`). Removals,
revocations and admin grants are *entries*, each signed by the key that decided it::

    {"kind": "admin" | "remove" | "revoke", "subject": str, "by": key hex, "at": int,
     "signature": hex}

`subject` is a node key (admin), a node id (remove) or an invite token id (revoke); `at` is
the signer's clock in milliseconds, for the record. The rules (`Ledger.admit`):

- the authority may make any entry; an admin (named by an authority-signed "admin" entry)
  may remove and revoke, but not name admins; nobody else may make entries;
- nobody can remove the authority's own node; an admin that was removed can decide no more;
- bounds: at most MAX_ADMINS admins, MAX_PER_ADMIN entries by each admin, MAX_BY_ADMINS by
  all admins together, MAX_ENTRIES in all, so the authority always keeps room of its own;
- one entry per (kind, subject): the first one held wins, later ones change nothing.

An entry that breaks a rule is ignored and counted (`ignored`): entries travel relayed, and
a relayer cannot always know what another node will accept (it may not have heard of an
admin yet). An entry whose signature fails although it names the authority or a known admin
is the sender's fault (`check_signature`): every node checks what it holds and relays.
Pure: signatures come in as callables, times as arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshdesk.core.errors import Fault
from meshdesk.core.gossip_values import (MAX_ID_LENGTH, MembershipError, check, read_counter, read_mapping,
                                         read_text, require_fields)
from meshdesk.core.identity import PUBLIC_KEY_LENGTH, node_id_for

ADMIN, REMOVE, REVOKE = "admin", "remove", "revoke"
KINDS = (ADMIN, REMOVE, REVOKE)
MAX_TOKEN_ID_LENGTH = 128
MAX_ENTRIES = 4096
MAX_ADMINS = 16
MAX_PER_ADMIN = 256
MAX_BY_ADMINS = 2048
ENTRY_FIELDS = frozenset({"kind", "subject", "by", "at", "signature"})
_DOMAIN = b"meshdesk/1 authority entry\0"
_SUBJECT_LENGTH = {ADMIN: 2 * PUBLIC_KEY_LENGTH, REMOVE: MAX_ID_LENGTH, REVOKE: MAX_TOKEN_ID_LENGTH}


class NotAuthorised(ValueError):
    """This node may not make that entry; str() is the reason, for the user."""


@dataclass(frozen=True)
class Entry:
    kind: str
    subject: str
    by: str          # the signer's public key, hex
    at: int
    signature: str = ""

    def to_wire(self) -> dict:
        return {"kind": self.kind, "subject": self.subject, "by": self.by, "at": self.at,
                "signature": self.signature}

    @classmethod
    def from_wire(cls, data: object) -> Entry:
        read_mapping(data, "entry", len(ENTRY_FIELDS))
        require_fields(data, ENTRY_FIELDS, "entry")
        kind = data["kind"]
        check(isinstance(kind, str) and kind in KINDS, f"entry kind must be one of {', '.join(KINDS)}")
        return cls(kind, read_text(data["subject"], "entry subject", _SUBJECT_LENGTH[kind], empty_ok=False),
                   read_text(data["by"], "entry signer", 2 * PUBLIC_KEY_LENGTH, empty_ok=False),
                   read_counter(data["at"], "entry time"), read_text(data["signature"], "entry signature", 128))

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)

    def signing_bytes(self) -> bytes:
        return _DOMAIN + json.dumps([self.kind, self.subject, self.by, self.at], separators=(",", ":")).encode()


def make_entry(kind: str, subject: str, public_key: bytes, at: int, sign: Callable[[bytes], bytes]) -> Entry:
    unsigned = Entry(kind, subject, public_key.hex(), at)
    return Entry(kind, subject, unsigned.by, at, sign(unsigned.signing_bytes()).hex())


def key_id(key_hex: str) -> str | None:
    """The node id a hex key derives to, or None when it is not one key's single spelling."""
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        return None
    return node_id_for(key) if len(key) == PUBLIC_KEY_LENGTH and key.hex() == key_hex else None


class Ledger:
    """The entries a node holds, and the rules that admit them."""

    def __init__(self, authority: str | None, verify: Callable[[bytes, bytes, bytes], bool]):
        self.authority = authority  # the founder's key, hex; None until learned
        self._verify = verify
        self._entries: dict[tuple[str, str], Entry] = {}
        self._subjects: dict[str, set[str]] = {kind: set() for kind in KINDS}
        self._by_signer: dict[str, int] = {}
        self.ignored = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ledger) and self._state() == other._state()

    def _state(self) -> tuple:
        return (self.authority, self._entries, self._by_signer, self.ignored)

    # ---- queries

    def subjects(self, kind: str) -> set[str]:
        """The subjects of the entries of one kind (the ledger's own set: do not change it)."""
        return self._subjects[kind]

    def entries(self) -> list[Entry]:
        """Grants first, so a peer that takes them in order knows each admin before its entries."""
        return sorted(self._entries.values(), key=lambda entry: (entry.kind != ADMIN,))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries

    def authority_id(self) -> str | None:
        return None if self.authority is None else key_id(self.authority)

    def refusal(self, kind: str, by: str) -> str | None:
        """Why `by` (a key, hex) may not make a `kind` entry now, or None when it may."""
        if self.authority is None:
            return "this node does not know its mesh's founder, so nobody here can remove or revoke"
        if by == self.authority:
            return None if len(self) < MAX_ENTRIES else "the mesh holds as many removals and revocations as it can"
        if kind == ADMIN or by not in self.subjects(ADMIN) or key_id(by) in self.subjects(REMOVE):
            what = "name admins" if kind == ADMIN else "remove members or revoke invites"
            return f"only the mesh's founder{'' if kind == ADMIN else ' and the admins it names'} can {what}"
        if self._by_signer.get(by, 0) >= MAX_PER_ADMIN or self._admin_total() >= MAX_BY_ADMINS \
                or len(self) >= MAX_ENTRIES:
            return "this admin has made as many removals and revocations as it may"
        return None

    def _admin_total(self) -> int:
        return sum(count for signer, count in self._by_signer.items() if signer != self.authority)

    def check_signature(self, entry: Entry) -> None:
        """Raises MembershipError (Fault.UNAUTHENTICATED) for an entry that claims a signer we
        take entries from and is not signed by it: nobody honest relays such an entry, since
        every node checks what it holds."""
        if entry.key in self._entries or (entry.by != self.authority and entry.by not in self.subjects(ADMIN)):
            return
        if not self._signed(entry):
            raise MembershipError(f"an entry claims to be by {entry.by[:16]}... and is not", Fault.UNAUTHENTICATED)

    def _signed(self, entry: Entry) -> bool:
        try:
            return bool(self._verify(bytes.fromhex(entry.by), entry.signing_bytes(), bytes.fromhex(entry.signature)))
        except ValueError:
            return False

    # ---- changes

    def admit(self, entry: Entry) -> bool:
        """Holds `entry` if the rules allow it; True when it is new here."""
        if entry.key in self._entries:
            return False
        if not self._allowed(entry):
            self.ignored += 1
            return False
        self._entries[entry.key] = entry
        self._subjects[entry.kind].add(entry.subject)
        self._by_signer[entry.by] = self._by_signer.get(entry.by, 0) + 1
        return True

    def admit_all(self, entries: Iterable[Entry]) -> bool:
        news = False
        for entry in sorted(entries, key=lambda entry: entry.kind != ADMIN):
            news = self.admit(entry) or news
        return news

    def _allowed(self, entry: Entry) -> bool:
        if self.refusal(entry.kind, entry.by) is not None:
            return False
        if entry.kind == REMOVE and entry.subject == self.authority_id():
            return False  # the founder cannot be removed
        if entry.kind == ADMIN and (key_id(entry.subject) is None or len(self.subjects(ADMIN)) >= MAX_ADMINS):
            return False
        return self._signed(entry)
