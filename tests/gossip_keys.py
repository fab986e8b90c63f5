"""Node keys for gossip tests: one real Ed25519 key per label ("A", "b2", ...), derived from
the label so runs repeat, and the ids, signers and records that go with them."""

from __future__ import annotations

import hashlib
import itertools
from functools import cache

from cryptography.hazmat.primitives.asymmetric import ed25519

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.core.identity import node_id_for
from meshdesk.core.membership import Membership

verify = verify_signature


@cache
def key(label: str) -> NodeKey:
    """A label that starts with a hex letter gets an id that starts with it too, so ids sort
    as their labels do ("a1" < "b2" < "c3") and tests that depend on the lower id still read."""
    for attempt in itertools.count():
        seed = hashlib.sha256(f"meshdesk test key {label} {attempt}".encode()).digest()
        found = NodeKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
        if label[0] not in "abcdef" or node_id_for(found.public_bytes).startswith(label[0]):
            return found


class _Ids(dict):
    """label -> node id, made on first use; `.label(node_id)` goes back."""

    def __missing__(self, label: str) -> str:
        self[label] = node_id_for(key(label).public_bytes)
        return self[label]

    def label(self, node_id: str) -> str:
        return next(label for label, known in self.items() if known == node_id)


ID = _Ids()


def key_hex(label: str) -> str:
    return key(label).public_bytes.hex()


def sign_as(label: str):
    return key(label).sign


def membership(record, label: str, **options) -> Membership:
    """A Membership for `record` (of node `label`), signing with that node's key."""
    return Membership(record, sign=sign_as(label), verify=verify, **options)
