"""Rotating the mesh secret, so a removed member's copy of it stops opening the mesh (pure).

The mesh secret proves membership for nodes that others do not know yet (a member that joined
through someone else). A removed node keeps its copy, so a removal is followed by a new secret:

- The remover makes `Rekey(mesh, epoch + 1, new secret, by=its id)`, signed with its node key,
  and sends it over its authenticated, encrypted control links. Every member that takes it
  passes it on to its other links, and to every link that comes up later, so members that were
  away get it when they return.
- A member takes a rekey only when its epoch is newer than its own and it is signed by a node
  that may remove members (the caller decides who: `may_rekey`), with the key that node's own
  signed record carries.
- Known members that were away still hold an older secret. Acceptors admit them with a
  previous secret too (their node key is known and not removed), and hand them the rekey. A
  node nobody knows must prove the current secret, and a removed node is refused before any
  secret is looked at.

Wire form (a control message)::

    {"type": "rekey", "mesh_id": str, "epoch": int, "secret": hex(32), "by": node id,
     "signature": hex(64)}
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from meshdesk.core.errors import Fault, PeerProtocolError

MESSAGE_TYPE = "rekey"
SECRET_BYTES = 32
SIGNATURE_BYTES = 64
MAX_EPOCH = 2**31          # one a removal: never reached, but bounded
MAX_PREVIOUS_SECRETS = 4   # how many older secrets still admit known members
_STATEMENT_DOMAIN = b"meshdesk/1 rekey\0"
_FIELDS = frozenset({"type", "mesh_id", "epoch", "secret", "by", "signature"})


class RekeyError(PeerProtocolError):
    """A rekey that is malformed, forged, or from a node that may not rotate the secret."""


@dataclass(frozen=True)
class Rekey:
    mesh_id: str
    epoch: int
    secret: bytes
    by: str
    signature: bytes = b""

    def statement(self) -> bytes:
        """What the signature covers: the secret only through its hash, so logs of it are safe."""
        digest = hashlib.sha256(self.secret).hexdigest()
        return _STATEMENT_DOMAIN + f"{self.mesh_id}|{self.epoch}|{self.by}|{digest}".encode()

    def signed(self, sign: Callable[[bytes], bytes]) -> Rekey:
        return Rekey(self.mesh_id, self.epoch, self.secret, self.by, sign(self.statement()))

    def to_wire(self) -> dict:
        return {"type": MESSAGE_TYPE, "mesh_id": self.mesh_id, "epoch": self.epoch,
                "secret": self.secret.hex(), "by": self.by, "signature": self.signature.hex()}

    @classmethod
    def from_wire(cls, message: object) -> Rekey:
        _check(isinstance(message, dict) and message.get("type") == MESSAGE_TYPE, "not a rekey message")
        _check(set(message) == _FIELDS, "a rekey message has exactly the fields of its format")
        epoch = message["epoch"]
        _check(type(epoch) is int and 1 <= epoch <= MAX_EPOCH, "rekey epoch is out of range")
        return cls(_text(message["mesh_id"], "mesh_id"), epoch,
                   _hex(message["secret"], "secret", SECRET_BYTES), _text(message["by"], "by"),
                   _hex(message["signature"], "signature", SIGNATURE_BYTES))


def check_rekey(rekey: Rekey, mesh_id: str, signer_key: bytes | None, may_rekey: bool,
                verify: Callable[[bytes, bytes, bytes], bool]) -> None:
    """Raises RekeyError unless `rekey` is for this mesh and signed by a node that may rotate.

    `signer_key` is the public key in the signer's own (signed) record, None when unknown.
    Whether it is newer than what we hold is the caller's question (`is_newer`).
    """
    if rekey.mesh_id != mesh_id:
        raise RekeyError(f"a rekey for another mesh ({rekey.mesh_id[:20]})", Fault.REFUSED)
    if not may_rekey:
        raise RekeyError(f"node {rekey.by[:20]} may not rotate the mesh secret", Fault.REFUSED)
    if signer_key is None or not verify(signer_key, rekey.statement(), rekey.signature):
        raise RekeyError("a rekey whose signature does not verify", Fault.UNAUTHENTICATED)


def is_newer(rekey: Rekey, held_epoch: int) -> bool:
    return rekey.epoch > held_epoch


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise RekeyError(problem)


def _text(value: object, what: str) -> str:
    _check(isinstance(value, str) and 0 < len(value) <= 64, f"rekey {what} must be a short string")
    return value


def _hex(value: object, what: str, length: int) -> bytes:
    try:
        decoded = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        decoded = None
    _check(decoded is not None and len(decoded) == length, f"rekey {what} must be {length} bytes in hex")
    return decoded
