"""The mesh handshake's messages and proofs (pure; signatures come in as callables).

    dialler  -> acceptor: hello  (mesh id, node key, nonce, versions, optional invite)
    acceptor -> dialler : hello  (or refuse)
    dialler  -> acceptor: auth   (signature; mesh MAC unless joining by invite)
    acceptor -> dialler : auth   (signature, MAC, and the mesh secret for a joiner) or refuse

Both proofs cover a transcript of both hellos and of the TLS keys: the accepting side's as the
dialler saw it and, on the data plane (mutual TLS), the dialling side's as the acceptor saw it.
Each side also checks that the peer's TLS key is the node key in its hello. A relay in the
middle would have to present its own TLS key, so the transcripts differ and the proofs fail:
they are bound to this one connection. (A TLS exporter, RFC 9266, would bind the session
itself; neither Python's ssl nor aioquic exposes one, so the keys stand in for it.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from meshdesk.core.errors import Fault, PeerProtocolError
from meshdesk.core.identity import node_id_for

PROTOCOL_VERSION = 6  # 2: signed records, gossip v2, mutual TLS on the data plane; 3: gossip v3 (mesh wants);
# 4: requests carry tools, tool_choice, response_format and penalties (a protocol 3 host would drop them);
# 5: hole punching (punch-ask and punch on the control link) and data streams over QUIC;
# 6: records carry relayed_addresses and relays (a protocol 5 node refuses such records)
NONCE_BYTES = 32
DIAL, ACCEPT = "dial", "accept"
PLANES = ("quic", "tls")
MAX_NAME = 64
MAX_INVITE = 2048
MAX_HOST = 64  # an IPv6 literal with its zone fits
_TRANSCRIPT_DOMAIN = b"meshdesk/1 handshake\0"
_MAC_DOMAIN = b"meshdesk/1 membership\0"


class HandshakeError(PeerProtocolError):
    """The peer's handshake is malformed or its proof is wrong; str() is one line."""


class Refused(HandshakeError):
    """The peer refused us; `reason` is its own words (one printable line), `fault` its kind."""

    fault = Fault.REFUSED

    def __init__(self, reason: str, fault: Fault = Fault.REFUSED):
        super().__init__(f"refused by peer: {reason}", fault)
        self.reason = reason


@dataclass(frozen=True)
class Hello:
    role: str
    mesh_id: str
    node_key: bytes
    nonce: bytes
    name: str
    versions: dict
    invite: str | None = None
    purpose: str = "control"

    @property
    def node_id(self) -> str:
        return node_id_for(self.node_key)

    def to_wire(self) -> dict:
        message = {"type": "hello", "v": PROTOCOL_VERSION, "role": self.role,
                   "mesh_id": self.mesh_id, "node_key": self.node_key.hex(),
                   "nonce": self.nonce.hex(), "name": self.name, "versions": self.versions,
                   "purpose": self.purpose}
        if self.invite is not None:
            message["invite"] = self.invite
        return message


@dataclass(frozen=True)
class Auth:
    signature: bytes
    mac: bytes | None
    mesh_secret: bytes | None = None  # only from an acceptor to a node joining by invite
    # Where the sender sees the other end of this connection (`core.reachability`); optional,
    # so older builds, which ignore unknown fields, still link with us.
    observed: tuple[str, int] | None = None

    def to_wire(self) -> dict:
        message = {"type": "auth", "signature": self.signature.hex(),
                   "mac": None if self.mac is None else self.mac.hex()}
        if self.mesh_secret is not None:
            message["mesh_secret"] = self.mesh_secret.hex()
        if self.observed is not None:
            message["observed"] = list(self.observed)
        return message


# Refusals the dialler acts on (leaves the mesh, stops retrying); any other is plain "refused".
NAMED_REFUSALS = {fault.value: fault for fault in (Fault.REMOVED, Fault.INCOMPATIBLE, Fault.UNAUTHENTICATED)}


def refuse_message(reason: str, fault: Fault = Fault.REFUSED) -> dict:
    message = {"type": "refuse", "reason": reason[:300]}
    if fault.value in NAMED_REFUSALS:
        message["fault"] = fault.value
    return message


def parse_hello(message: dict, expected_role: str) -> Hello:
    refused(message)
    expect_type(message, "hello")
    if type(message.get("v")) is not int or message.get("v") != PROTOCOL_VERSION:  # not True, not 1.0
        raise HandshakeError(f"peer speaks mesh protocol {repr(message.get('v'))[:40]}, we speak {PROTOCOL_VERSION}",
                             Fault.INCOMPATIBLE)
    if message.get("role") != expected_role:
        raise HandshakeError(f"expected a {expected_role} hello, got role {repr(message.get('role'))[:40]}")
    return Hello(
        role=expected_role,
        mesh_id=text_field(message, "mesh_id", 64),
        node_key=hex_field(message, "node_key", 32),
        nonce=hex_field(message, "nonce", NONCE_BYTES),
        name=printable(text_field(message, "name", MAX_NAME)),
        versions=dict_field(message, "versions"),
        invite=optional_text(message, "invite", MAX_INVITE),
        purpose=text_field(message, "purpose", 64),
    )


def parse_auth(message: dict) -> Auth:
    refused(message)
    expect_type(message, "auth")
    mac = None if message.get("mac") is None else hex_field(message, "mac", 32)
    secret = None if message.get("mesh_secret") is None else hex_field(message, "mesh_secret", 32)
    return Auth(hex_field(message, "signature", 64), mac, secret, observed_field(message))


def observed_field(message: dict) -> tuple[str, int] | None:
    """An [ip, port] pair, or None; whether the address is usable is `core.reachability`'s call."""
    value = message.get("observed")
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and 0 < len(value[0]) <= MAX_HOST and type(value[1]) is int and 0 <= value[1] <= 65535):
        raise HandshakeError("handshake field 'observed' must be an [address, port] pair")
    return value[0], value[1]


def refused(message: dict) -> None:
    if message.get("type") == "refuse":
        reason = message.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            reason = "no reason"
        # The peer's words: kept to one printable line, so they cannot forge log or terminal lines.
        reason = "".join(char if char.isprintable() else " " for char in reason[:300])
        raise Refused(reason, refusal_fault(message.get("fault")))


def printable(text: str) -> str:
    """The peer's words with every control or other unprintable character shown as U+FFFD, so
    they cannot forge log lines or move a terminal's cursor."""
    return "".join(char if char.isprintable() else "\ufffd" for char in text)


def refusal_fault(value: object) -> Fault:
    """The kind of refusal the peer named; older peers name none, and so do unknown kinds."""
    return NAMED_REFUSALS.get(value, Fault.REFUSED) if isinstance(value, str) else Fault.REFUSED


def expect_type(message: dict, wanted: str) -> None:
    if message.get("type") != wanted:
        raise HandshakeError(f"expected a {wanted} message, got {str(message.get('type'))[:40]!r}")


def text_field(message: dict, name: str, limit: int) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise HandshakeError(f"handshake field {name!r} must be a string of 1 to {limit} characters")
    return value


def optional_text(message: dict, name: str, limit: int) -> str | None:
    return None if message.get(name) is None else text_field(message, name, limit)


def hex_field(message: dict, name: str, length: int) -> bytes:
    value = message.get(name)
    try:
        decoded = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        decoded = None
    if decoded is None or len(decoded) != length:
        raise HandshakeError(f"handshake field {name!r} must be {length} bytes in hex")
    return decoded


def dict_field(message: dict, name: str) -> dict:
    value = message.get(name)
    if not isinstance(value, dict) or len(json.dumps(value)) > 4096:
        raise HandshakeError(f"handshake field {name!r} must be a small object")
    return value


def transcript(dialler: Hello, acceptor: Hello, acceptor_tls_key: bytes, plane: str,
               dialler_tls_key: bytes | None = None) -> bytes:
    parts = [dialler.mesh_id, dialler.node_key.hex(), dialler.nonce.hex(), dialler.invite,
             dialler.purpose, acceptor.mesh_id, acceptor.node_key.hex(), acceptor.nonce.hex(),
             acceptor_tls_key.hex(), plane]
    if dialler_tls_key is not None:
        parts.append(dialler_tls_key.hex())
    return hashlib.sha256(_TRANSCRIPT_DOMAIN + json.dumps(parts).encode()).digest()


def signed_statement(transcript_digest: bytes, role: str) -> bytes:
    return transcript_digest + role.encode()


def membership_mac(mesh_secret: bytes, transcript_digest: bytes, role: str) -> bytes:
    key = hmac.new(mesh_secret, _MAC_DOMAIN, hashlib.sha256).digest()
    return hmac.new(key, signed_statement(transcript_digest, role), hashlib.sha256).digest()


def mac_matches(mesh_secret: bytes, transcript_digest: bytes, role: str, mac: bytes | None) -> bool:
    if mac is None:
        return False
    return hmac.compare_digest(membership_mac(mesh_secret, transcript_digest, role), mac)


def version_conflict(own: dict, peer: dict) -> str | None:
    """Why two nodes cannot work together, or None when they can."""
    for key in ("protocol", "rpc"):
        if own.get(key) is not None and peer.get(key) is not None and own.get(key) != peer.get(key):
            return (f"incompatible {key} version: peer has {peer.get(key)!r}, "
                    f"this node has {own.get(key)!r}")
    return None
