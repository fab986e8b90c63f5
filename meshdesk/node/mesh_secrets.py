"""The mesh secret of this node, its epoch, the older secrets it still accepts, and the latest
rekey to pass on (see `core.rekey`). Secret bytes live only in the secret store."""

from __future__ import annotations

import json
import logging

from meshdesk.core.errors import Fault, PeerProtocolError
from meshdesk.core.handshake import Refused
from meshdesk.core.identity import mesh_id_for
from meshdesk.core.rekey import MAX_PREVIOUS_SECRETS, SECRET_BYTES, Rekey, check_rekey, is_newer
from meshdesk.node.handshake import Credentials, PeerIdentity
from meshdesk.node.interfaces import MessageLink, SecretStore
from meshdesk.node.linking import Dial, HandshakeFailed, connect_and_authenticate

log = logging.getLogger(__name__)

MESH_SECRET = "mesh-secret"
PREVIOUS_SECRETS = "mesh-secret-previous"  # newest first, concatenated
LATEST_REKEY = "mesh-rekey"                # the rekey that made the current secret, as JSON


class MeshSecrets:
    def __init__(self, store: SecretStore):
        self.store = store
        self.current: bytes | None = store.get(MESH_SECRET)
        self.previous: list[bytes] = split_secrets(store.get(PREVIOUS_SECRETS))
        self.latest: Rekey | None = stored_rekey(store.get(LATEST_REKEY), self.current)

    def open(self, mesh_id: str | None) -> bool:
        """Whether the stored secret opens `mesh_id`: it names it, or the rekey that made it does."""
        if self.current is None or mesh_id is None:
            return False
        return mesh_id == mesh_id_for(self.current) or (self.latest is not None and self.latest.mesh_id == mesh_id)

    @property
    def epoch(self) -> int:
        return 0 if self.latest is None else self.latest.epoch

    def start_over(self, secret: bytes) -> None:
        """A mesh new to this node (founded, or joined): no history."""
        self.current, self.previous, self.latest = secret, [], None
        self._save()

    def take(self, rekey: Rekey) -> None:
        """A checked, newer rekey: its secret becomes current, the old one stays accepted a while."""
        if self.current is not None and self.current != rekey.secret:
            self.previous = ([self.current] + self.previous)[:MAX_PREVIOUS_SECRETS]
        self.current, self.latest = rekey.secret, rekey
        self._save()

    def for_dialler(self, known_member: bool) -> list[bytes]:
        """Secrets an acceptor takes as proof: older ones only from members it knows."""
        return [self.current] + (self.previous if known_member else [])

    def for_dialling(self) -> list[bytes]:
        """Secrets to try as dialler, newest first: a peer that was away may hold an older one."""
        return [self.current] + self.previous

    def _save(self) -> None:
        self.store.set(MESH_SECRET, self.current)
        self.store.set(PREVIOUS_SECRETS, b"".join(self.previous))
        self.store.set(LATEST_REKEY, b"" if self.latest is None else json.dumps(self.latest.to_wire()).encode())


def split_secrets(stored: bytes | None) -> list[bytes]:
    if not stored or len(stored) % SECRET_BYTES:
        return []
    return [stored[start:start + SECRET_BYTES] for start in range(0, len(stored), SECRET_BYTES)]


def stored_rekey(stored: bytes | None, current: bytes | None) -> Rekey | None:
    """The stored rekey, when it still describes the current secret."""
    if not stored:
        return None
    try:
        rekey = Rekey.from_wire(json.loads(stored))
    except (ValueError, PeerProtocolError) as error:
        log.warning("ignoring a damaged stored rekey: %s", error)
        return None
    return rekey if rekey.secret == current else None


def rotated(keys: MeshSecrets, mesh_id: str, own_id: str, credentials: Credentials) -> Rekey:
    """A new secret after a removal, signed by this node (which may remove, or it could not have)."""
    rekey = Rekey(mesh_id, keys.epoch + 1, credentials.random_bytes(SECRET_BYTES), own_id)
    return rekey.signed(credentials.sign)


def newer_rekey(message: dict, keys: MeshSecrets, mesh_id: str, membership, now: float,
                verify) -> Rekey | None:
    """The rekey in `message` when it is newer than ours and its signer may rotate the secret;
    None when it is not newer. Raises RekeyError (a PeerProtocolError) when it is bad."""
    rekey = Rekey.from_wire(message)
    if not is_newer(rekey, keys.epoch):
        return None
    signer = next((record for record in membership.alive_records(now) if record.node_id == rekey.by), None)
    key_hex = None if signer is None else signer.public_key
    check_rekey(rekey, mesh_id, None if key_hex is None else bytes.fromhex(key_hex),
                may_rotate(membership, rekey.by, key_hex), verify)
    return rekey


def may_rotate(membership, node_id: str, key_hex: str | None) -> bool:
    """Who may remove may rotate: the mesh's founder, and admins not removed since."""
    if key_hex is None or node_id in membership.removed_node_ids:
        return False
    ledger = membership.authority
    return key_hex == ledger.authority or key_hex in ledger.subjects("admin")


async def dial_with_secrets(transport, address, credentials: Credentials, mesh_id: str,
                            secrets: list[bytes], timeout: float) -> tuple[MessageLink, PeerIdentity]:
    """Dials with the newest secret, and with older ones while the peer says we are not members:
    a peer that was away during a rotation still holds an older secret."""
    for index, secret in enumerate(secrets):
        try:
            return await connect_and_authenticate(transport, address, credentials, Dial(mesh_id, secret), timeout)
        except HandshakeFailed as failure:
            cause = failure.cause
            not_member = isinstance(cause, Refused) and cause.fault is Fault.UNAUTHENTICATED
            if not not_member or index == len(secrets) - 1:
                raise
