"""The relay's protocol (pure): how a node behind any router stays reachable through a relay.

A relay is a small server on a reachable address (`meshdesk relay --port N`, or a member that
offers one). It forwards UDP datagrams and understands none of them: they are the QUIC packets
of the members' own connections, encrypted end to end by TLS 1.3 between node keys that each
side pins in the mesh handshake. The relay holds no key, sees no message and cannot join.

Registration, on a TCP connection to the relay's port (frames as `core.frames`)::

    relay -> node: {"type": "challenge", "version": 1, "nonce": hex}
    node -> relay: {"type": "register", "public_key": hex, "signature": hex}
    relay -> node: {"type": "registered", "port": P}      or {"type": "refused", "reason": str}
    node -> relay: {"type": "ping"}   relay -> node: {"type": "pong"}   (keeps both alive)

The signature is the node key's over `registration_bytes(nonce)`: only a key's owner can take
the listening port named after it. From then on the node is reachable at the relay's host and
port P, its *relayed address*, which it advertises and puts in its invites; whoever dials that
address needs no idea that it is a relay.

Each new source address that sends to P gets a session: a port Q of its own, and a token::

    relay -> node: {"type": "session", "port": Q, "token": hex}

The node sends a claim datagram (`claim_datagram(token)`) from its mesh port to Q, which opens
its router towards Q (a symmetric router opens a new public port for it) and tells the relay
where the node's end is. Then what the source sends to P goes out of Q to the node, and what
the node sends to Q goes out of P to the source, so each side sees the other at one steady
address. A datagram to Q from anywhere but the claimed address is dropped.
"""

from __future__ import annotations

import hashlib

from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.identity import PUBLIC_KEY_LENGTH, node_id_for

RELAY_VERSION = 1
NONCE_BYTES = 32
TOKEN_BYTES = 16
SIGNATURE_BYTES = 64
MAX_CONTROL_FRAME = 4096
CLAIM_PREFIX = b"\x00meshdesk relay claim\x00"  # fixed bit clear: no QUIC packet starts so
_REGISTRATION_DOMAIN = b"meshdesk/1 relay registration\0"

REGISTER_TIMEOUT = 5.0      # from the TCP connection to a valid registration
CONTROL_PING_SECONDS = 15.0  # the node pings this often; NAT mappings for TCP outlive it
CONTROL_IDLE_SECONDS = 45.0  # a control connection silent this long is gone
SESSION_IDLE_SECONDS = 60.0  # a session no datagram crossed this long is closed

Address = tuple[str, int]


class RelayProtocolError(PeerProtocolError):
    """A relay message or registration that is malformed or does not prove what it says."""


def registration_bytes(nonce: bytes) -> bytes:
    return _REGISTRATION_DOMAIN + nonce


def challenge(nonce: bytes) -> dict:
    return {"type": "challenge", "version": RELAY_VERSION, "nonce": nonce.hex()}


def register(public_key: bytes, signature: bytes) -> dict:
    return {"type": "register", "public_key": public_key.hex(), "signature": signature.hex()}


def registered(port: int) -> dict:
    return {"type": "registered", "port": port}


def refused(reason: str) -> dict:
    return {"type": "refused", "reason": reason}


def session(port: int, token: bytes) -> dict:
    return {"type": "session", "port": port, "token": token.hex()}


def claim_datagram(token: bytes) -> bytes:
    return CLAIM_PREFIX + token


def claimed_token(datagram: bytes) -> bytes | None:
    """The token a claim datagram carries, or None when the datagram is no claim."""
    if len(datagram) == len(CLAIM_PREFIX) + TOKEN_BYTES and datagram.startswith(CLAIM_PREFIX):
        return datagram[len(CLAIM_PREFIX):]
    return None


def hex_field(message: dict, name: str, length: int) -> bytes:
    value = message.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != length or raw.hex() != value:
        raise RelayProtocolError(f"a relay {message.get('type')!r} message needs {length} bytes of "
                                 f"lower-case hex in {name!r}")
    return raw


def port_field(message: dict) -> int:
    port = message.get("port")
    if type(port) is not int or not 0 < port < 65536:
        raise RelayProtocolError(f"a relay {message.get('type')!r} message needs a port")
    return port


def read_challenge(message: dict) -> bytes:
    if message.get("type") != "challenge" or message.get("version") != RELAY_VERSION:
        raise RelayProtocolError(f"not a MeshDesk relay of version {RELAY_VERSION}: it sent "
                                 f"{str(message.get('type'))[:40]!r} version {str(message.get('version'))[:10]}")
    return hex_field(message, "nonce", NONCE_BYTES)


def read_registration(message: dict, nonce: bytes, verify) -> str:
    """The node id a registration proves, or RelayProtocolError; `verify(key, data, signature)`."""
    if message.get("type") != "register":
        raise RelayProtocolError(f"expected a registration, got {str(message.get('type'))[:40]!r}")
    public_key = hex_field(message, "public_key", PUBLIC_KEY_LENGTH)
    signature = hex_field(message, "signature", SIGNATURE_BYTES)
    if not verify(public_key, registration_bytes(nonce), signature):
        raise RelayProtocolError("the registration is not signed by the key it names")
    return node_id_for(public_key)


def preferred_port(node_id: str, low: int, high: int, attempt: int) -> int:
    """The `attempt`-th port to try for `node_id` in [low, high]: the same after a relay restarts,
    so the relayed address in an invite keeps working."""
    span = high - low + 1
    start = int(hashlib.sha256(node_id.encode()).hexdigest()[:8], 16)
    return low + (start + attempt) % span


def parse_port_range(text: str) -> tuple[int, int] | None:
    """'LOW-HIGH' as a pair, '0' as None (ports the system picks); ValueError otherwise."""
    if text.strip() == "0":
        return None
    low_text, separator, high_text = text.partition("-")
    if not separator or not low_text.strip().isdigit() or not high_text.strip().isdigit():
        raise ValueError(f"a port range is LOW-HIGH (or 0 for any free ports), not {text!r}")
    low, high = int(low_text), int(high_text)
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"a port range lies within 1024-65535, low first, not {text!r}")
    return low, high
