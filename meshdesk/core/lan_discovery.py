"""Finding members on the LAN by mDNS without telling anyone else who we are (pure).

A node announces `SERVICE_TYPE` with its mesh port and LAN addresses (`adapters.mdns`). The
announcement names no mesh, node id or name: its instance name is random, and its TXT record
holds a fresh random salt and a tag, HMAC-SHA256(node public key, salt) truncated. Whoever
knows the node's key recognises it: members (the key is in its gossip record) and a joiner
(an invite carries its inviter's key). Nobody else can tell whose it is, or that two
announcements with different salts are one node's, beyond the addresses themselves.

A recognised announcement is only a candidate address to dial: the authenticated handshake,
which checks the key the dialler expects, decides everything. So a forged or replayed
announcement (someone copies a member's salt and tag next to their own address) gets at most a
dial that fails before the dialler says a word (it checks the key the peer's TLS shows first);
to keep that cheap, an announcement lends at most MAX_CANDIDATES usable addresses, a node's
last MAX_KEPT_ADDRESSES are kept, and a member is dialled over the LAN once each LAN_DIAL_SECONDS.

Time comes in as `now`, salts as bytes the caller drew.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshdesk.core.reachability import Address, usable

SERVICE_TYPE = "_meshdesk._udp.local."
ANNOUNCEMENT_VERSION = "1"
SALT_BYTES = 16
TAG_BYTES = 16
MAX_CANDIDATES = 4
MAX_KEPT_ADDRESSES = 8    # of one node, latest first
MAX_REMEMBERED = 64        # nodes whose LAN addresses we keep (a joiner's inviter among them)
LAN_DIAL_SECONDS = 10.0
_TAG_DOMAIN = b"meshdesk/1 lan announcement\0"


def tag_for(public_key: bytes, salt: bytes) -> bytes:
    return hmac.new(public_key, _TAG_DOMAIN + salt, hashlib.sha256).digest()[:TAG_BYTES]


def announcement(public_key: bytes, salt: bytes) -> dict[str, str]:
    """The TXT record's properties for our announcement."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a salt is {SALT_BYTES} bytes")
    return {"v": ANNOUNCEMENT_VERSION, "s": salt.hex(), "t": tag_for(public_key, salt).hex()}


@dataclass(frozen=True)
class Heard:
    """An announcement of our service on the LAN, not yet known to be anyone's."""

    salt: bytes
    tag: bytes
    addresses: tuple[Address, ...]


def heard(properties: Mapping, hosts: Iterable[str], port: int) -> Heard | None:
    """What an announcement says, or None when it is not one of ours or is malformed (a LAN
    may carry anything). `properties` as zeroconf gives them: bytes keys and values."""
    def field(name: str, length: int) -> bytes | None:
        value = properties.get(name.encode())
        try:
            decoded = bytes.fromhex(value.decode("ascii")) if isinstance(value, bytes) else None
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded if decoded is not None and len(decoded) == length else None

    if properties.get(b"v") != ANNOUNCEMENT_VERSION.encode():
        return None
    salt, tag = field("s", SALT_BYTES), field("t", TAG_BYTES)
    if salt is None or tag is None or type(port) is not int:
        return None
    addresses = tuple(dict.fromkeys((str(host), port) for host in hosts))
    addresses = tuple(address for address in addresses if usable(address))[:MAX_CANDIDATES]
    return Heard(salt, tag, addresses) if addresses else None


def recognise(announcement_heard: Heard, keys: Mapping[str, bytes]) -> str | None:
    """Whose announcement it is, of the nodes whose keys we know (node id -> public key)."""
    for node_id, public_key in keys.items():
        if hmac.compare_digest(tag_for(public_key, announcement_heard.salt), announcement_heard.tag):
            return node_id
    return None


class LanCandidates:
    """Where recognised nodes were last heard on the LAN, and when each may be dialled again."""

    def __init__(self):
        self._addresses: dict[str, tuple[Address, ...]] = {}
        self._dialled_at: dict[str, float] = {}

    def heard_from(self, node_id: str, addresses: tuple[Address, ...]) -> None:
        """The latest addresses first, then those heard before (a copy of its announcement next
        to someone else's address must not push out the real one), MAX_KEPT_ADDRESSES at most."""
        kept = self._addresses.pop(node_id, ())
        self._addresses[node_id] = tuple(dict.fromkeys((*addresses, *kept)))[:MAX_KEPT_ADDRESSES]
        while len(self._addresses) > MAX_REMEMBERED:  # the oldest heard goes first
            del self._addresses[next(iter(self._addresses))]

    def addresses_of(self, node_id: str) -> list[Address]:
        return list(self._addresses.get(node_id, ()))

    def take_dial(self, now: float, node_id: str) -> list[Address]:
        """The addresses to dial `node_id` at now, or none while its last LAN dial is recent."""
        addresses = self.addresses_of(node_id)
        if not addresses or now < self._dialled_at.get(node_id, -LAN_DIAL_SECONDS) + LAN_DIAL_SECONDS:
            return []
        self._dialled_at[node_id] = now
        return addresses
