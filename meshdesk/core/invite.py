"""Invite tokens: a compact, signed, URL-safe string that lets a new node join a mesh.

Wire layout, version 1 (all integers big-endian), then base64url without padding:

    offset  size  field
    0       1     version = 1
    1       8     mesh id
    9       16    join secret
    25      32    inviter's raw Ed25519 public key
    57      4     expires_at, unix seconds, 0 = never (u32: good until 2106)
    61      1     address count, 1..8
    62      ...   each address: family (4 or 6), 4 or 16 address bytes, port (u16, 1..65535)
    end-64  64    Ed25519 signature over b"meshdesk invite v1\\0" + every byte before it

Two IPv4 addresses make 140 bytes, 187 characters.

The QR form (`InviteToken.qr_text`) carries the same bytes as decimal digits after the link
prefix in upper case, "MESHDESK://JOIN/0123…": a QR code holds digits at 3.3 bits each and
upper-case letters and ":/" at 5.5, against 8 bits for each base64url character (which packs
only 6), so the code is about a quarter smaller (version 10 instead of 12 at error correction
M for four addresses, two of them IPv6: docs/decisions.md). The first byte, the version, is
never 0, so the number has no leading zeros to lose, and a base64url token of any version
1 to 31 starts with A to H, never a digit: an all-digit body is always the QR form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import struct
from dataclasses import dataclass, replace
from typing import Callable, Collection

from meshdesk.core.identity import PUBLIC_KEY_LENGTH, node_id_for

TOKEN_VERSION = 1
LINK_PREFIX = "meshdesk://join/"
QR_PREFIX = LINK_PREFIX.upper()  # upper case: a QR code's alphanumeric mode has no lower case
MAX_ADDRESSES = 8
MESH_ID_BYTES = 8
JOIN_SECRET_BYTES = 16
SIGNATURE_BYTES = 64
MAX_EXPIRES_AT = 0xFFFF_FFFF
TOKEN_ID_LENGTH = 16
REFUSAL_REASONS = ("expired", "revoked", "tampered", "foreign", "removed-inviter")

_SIGNING_DOMAIN = b"meshdesk invite v1\0"
_HEADER = struct.Struct(">B8s16s32sIB")
_FAMILY_AND_PORT = {4: struct.Struct(">4sH"), 6: struct.Struct(">16sH")}
_NOT_BASE64URL = re.compile(r"[^A-Za-z0-9_-]")
_HEX_MESH_ID = re.compile(r"[0-9a-f]{16}")
_DECIMAL = re.compile(r"[0-9]+")
# Eight IPv6 addresses make 278 bytes, 670 digits; a longer number is no token of ours.
_MAX_QR_DIGITS = 700
# Version bytes a future MeshDesk might write; any other first byte means the text is no token at all.
_PLAUSIBLE_VERSIONS = range(1, 32)


class TokenError(ValueError):
    """Malformed token; str() is one clear line."""


class TokenRefused(Exception):
    """A well-formed token that this mesh will not honour; `reason` is one of REFUSAL_REASONS."""

    def __init__(self, reason: str, message: str):
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class InviteToken:
    mesh_id: str
    join_secret: bytes
    inviter_key: bytes
    addresses: tuple[tuple[str, int], ...]
    expires_at: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        _require(isinstance(self.mesh_id, str) and _HEX_MESH_ID.fullmatch(self.mesh_id),
                 f"mesh_id must be 16 lowercase hex characters, not {self.mesh_id!r}")
        _require_bytes("join_secret", self.join_secret, (JOIN_SECRET_BYTES,))
        _require_bytes("inviter_key", self.inviter_key, (PUBLIC_KEY_LENGTH,))
        _require_bytes("signature", self.signature, (0, SIGNATURE_BYTES))
        _require(_is_int(self.expires_at) and 0 <= self.expires_at <= MAX_EXPIRES_AT,
                 f"expires_at must be unix seconds from 0 (never) to {MAX_EXPIRES_AT}, not {self.expires_at!r}")
        # Normalised so that equal addresses compare equal after a round trip.
        object.__setattr__(self, "addresses", _normalised_addresses(self.addresses))

    @property
    def token_id(self) -> str:
        """Names the token in revocation lists without revealing its secret."""
        return hashlib.sha256(self.join_secret).hexdigest()[:TOKEN_ID_LENGTH]

    @property
    def inviter_id(self) -> str:
        return node_id_for(self.inviter_key)

    def signed_payload(self) -> bytes:
        return _SIGNING_DOMAIN + self._body()

    def signed(self, sign: Callable[[bytes], bytes]) -> InviteToken:
        return replace(self, signature=sign(self.signed_payload()))

    def encode(self) -> str:
        if len(self.signature) != SIGNATURE_BYTES:
            raise ValueError("sign the invite token before encoding it")
        return _encode_base64url(self._body() + self.signature)

    def link(self) -> str:
        return LINK_PREFIX + self.encode()

    def qr_text(self) -> str:
        """What the invite QR code says: the link, shorter in a QR code (see the module's doc)."""
        self.encode()  # the same check that the token is signed
        return QR_PREFIX + str(int.from_bytes(self._body() + self.signature, "big"))

    def _body(self) -> bytes:
        header = _HEADER.pack(TOKEN_VERSION, bytes.fromhex(self.mesh_id), self.join_secret,
                              self.inviter_key, self.expires_at, len(self.addresses))
        return header + b"".join(_encode_address(host, port) for host, port in self.addresses)


# ---------------------------------------------------------------- construction checks (our bugs)


def _require(condition: object, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_bytes(name: str, value: object, lengths: tuple[int, ...]) -> None:
    allowed = " or ".join(map(str, lengths))
    _require(isinstance(value, bytes) and len(value) in lengths,
             f"{name} must be {allowed} bytes, not {len(value) if isinstance(value, bytes) else value!r}")


def _normalised_addresses(addresses: object) -> tuple[tuple[str, int], ...]:
    _require(isinstance(addresses, (tuple, list)) and 1 <= len(addresses) <= MAX_ADDRESSES,
             f"an invite carries 1 to {MAX_ADDRESSES} addresses")
    return tuple(_normalised_address(address) for address in addresses)


def _normalised_address(address: object) -> tuple[str, int]:
    _require(isinstance(address, (tuple, list)) and len(address) == 2,
             f"an address is a (host, port) pair, not {address!r}")
    host, port = address
    _require(_is_int(port) and 1 <= port <= 65535, f"port must be 1 to 65535, not {port!r}")
    return str(_dialable_ip(host)), port


def _dialable_ip(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"an invite address must be an IPv4 or IPv6 literal, not {host!r}") from None
    # A scope (fe80::1%eth0) names an interface of the inviter's machine, meaningless to the joiner.
    _require(getattr(ip, "scope_id", None) is None, f"an invite address cannot carry a scope: {host!r}")
    _require(not ip.is_unspecified and not ip.is_multicast, f"{host!r} cannot be dialled")
    return ip


def _encode_address(host: str, port: int) -> bytes:
    ip = ipaddress.ip_address(host)
    return bytes([ip.version]) + _FAMILY_AND_PORT[ip.version].pack(ip.packed, port)


# ---------------------------------------------------------------- decoding (the user's or peer's text)


def decode_token(text: str) -> InviteToken:
    """The token in a bare token or a meshdesk://join/ link; TokenError with one line otherwise."""
    body = _token_text(text)
    if _DECIMAL.fullmatch(body):
        return _decode_qr_digits(body)
    token = _parse(_decode_base64url(body))
    # Base64 can spell the same bytes several ways; accept only the one spelling we write.
    if token.encode() != body:
        raise TokenError("not a MeshDesk invite token: it is not canonical base64url")
    return token


def _decode_qr_digits(digits: str) -> InviteToken:
    if len(digits) > _MAX_QR_DIGITS:
        raise TokenError("not a MeshDesk invite token: its number is too long")
    if digits.startswith("0"):
        raise TokenError("not a MeshDesk invite token: its number starts with 0")
    number = int(digits)
    return _parse(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def _token_text(text: object) -> str:
    if not isinstance(text, str):
        raise TokenError(f"not a MeshDesk invite token: expected text, got {type(text).__name__}")
    stripped = text.strip()
    if stripped[: len(LINK_PREFIX)].lower() == LINK_PREFIX:
        stripped = stripped[len(LINK_PREFIX):]
    elif "://" in stripped:
        raise TokenError(f"not a MeshDesk invite token: a join link starts with {LINK_PREFIX}")
    return stripped[:-1] if stripped.endswith("/") else stripped


def _decode_base64url(text: str) -> bytes:
    if not text:
        raise TokenError("not a MeshDesk invite token: it is empty")
    if bad := _NOT_BASE64URL.search(text):
        raise TokenError(f"not a MeshDesk invite token: unexpected character {bad.group()!r}")
    # A lone final character holds no whole byte: drop it so a cut-off token reads as truncated.
    usable = text[:-1] if len(text) % 4 == 1 else text
    try:
        return base64.urlsafe_b64decode(usable + "=" * (-len(usable) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("not a MeshDesk invite token: it is not valid base64url") from None


def _encode_base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _Reader:
    """Reads fields off the front of a token's bytes; running short means the token was cut off."""

    def __init__(self, data: bytes):
        self._data = data
        self._offset = 0

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise TokenError("invite token is truncated")
        chunk = self._data[self._offset:end]
        self._offset = end
        return chunk

    def peek_byte(self) -> int:
        return self._data[self._offset] if self.remaining else self.take(1)[0]

    def unpack(self, layout: struct.Struct) -> tuple:
        return layout.unpack(self.take(layout.size))

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset


def _parse(data: bytes) -> InviteToken:
    reader = _Reader(data)
    _check_version(reader.peek_byte())
    _, mesh_id, join_secret, inviter_key, expires_at, count = reader.unpack(_HEADER)
    if not 1 <= count <= MAX_ADDRESSES:
        raise TokenError(f"invite token lists {count} addresses; it may list 1 to {MAX_ADDRESSES}")
    addresses = tuple(_parse_address(reader) for _ in range(count))
    signature = reader.take(SIGNATURE_BYTES)
    if reader.remaining:
        raise TokenError(f"invite token has {reader.remaining} unexpected bytes at its end")
    try:
        return InviteToken(mesh_id.hex(), join_secret, inviter_key, addresses, expires_at, signature)
    except ValueError as error:
        raise TokenError(f"invite token is invalid: {error}") from None


def _check_version(version: int) -> None:
    if version == TOKEN_VERSION:
        return
    if version in _PLAUSIBLE_VERSIONS:
        raise TokenError(f"invite token version {version} is not supported "
                         f"(this MeshDesk reads version {TOKEN_VERSION}; a newer MeshDesk may read it)")
    raise TokenError("not a MeshDesk invite token: its content is not in any known format")


def _parse_address(reader: _Reader) -> tuple[str, int]:
    family = reader.take(1)[0]
    if family not in _FAMILY_AND_PORT:
        raise TokenError(f"invite token has an address of unknown family {family}")
    packed, port = reader.unpack(_FAMILY_AND_PORT[family])
    if port == 0:
        raise TokenError("invite token has an address with port 0")
    return str(ipaddress.ip_address(packed)), port


# ---------------------------------------------------------------- acceptance (the mesh's rules)


def check_token(
    token: InviteToken,
    *,
    now: float,
    verify: Callable[[bytes, bytes, bytes], bool],
    mesh_id: str | None = None,
    revoked_token_ids: Collection[str] = (),
    removed_node_ids: Collection[str] = (),
) -> None:
    """Raises TokenRefused unless this mesh honours the token at `now`.

    The signature is checked first so that no other verdict is based on forged content.
    `verify(public_key, message, signature)` returns whether the Ed25519 signature holds.
    """
    if not token.signature or not verify(token.inviter_key, token.signed_payload(), token.signature):
        raise TokenRefused("tampered", "invite token signature does not match: it was altered or forged")
    if mesh_id is not None and token.mesh_id != mesh_id:
        raise TokenRefused("foreign", f"invite token is for another mesh ({token.mesh_id}), not this one ({mesh_id})")
    if token.inviter_id in removed_node_ids:
        raise TokenRefused("removed-inviter", "the node that issued this invite was removed from the mesh")
    if token.token_id in revoked_token_ids:
        raise TokenRefused("revoked", "invite token was revoked")
    if token.expires_at and now >= token.expires_at:
        raise TokenRefused("expired", f"invite token expired {describe_age(now - token.expires_at)}")


def describe_age(seconds: float) -> str:
    """How long ago, in the largest unit that still reads naturally: "just now", "3 h ago"."""
    if seconds < 1:
        return "just now"
    for unit_seconds, unit, switch_after in ((1, "s", 90), (60, "min", 90), (3600, "h", 48)):
        if seconds < unit_seconds * switch_after:
            return f"{int(seconds // unit_seconds)} {unit} ago"
    return f"{int(seconds // 86400)} d ago"


# ---------------------------------------------------------------- `meshdesk invite --expires`

_DURATION = re.compile(r"([0-9]+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_SECONDS = 3650 * 86400
_DURATION_HELP = "use a number and a unit (90s, 30m, 12h, 7d, 1w) or 'never'"


def parse_duration(text: str) -> int:
    """Seconds in "90s", "30m", "12h", "7d", "1w"; 0 for "never"."""
    cleaned = text.strip().lower() if isinstance(text, str) else ""
    if cleaned == "never":
        return 0
    match = _DURATION.fullmatch(cleaned)
    if not match:
        raise ValueError(f"{text!r} is not a duration: {_DURATION_HELP}")
    number, unit = match.groups()
    # Bounded before int() so an absurd digit string reads as "too long", not an int() error.
    seconds = int(number) * _UNIT_SECONDS[unit] if len(number) <= 12 else MAX_DURATION_SECONDS + 1
    if seconds == 0:
        raise ValueError(f"{text!r} is no time at all: {_DURATION_HELP}")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is too long: at most {MAX_DURATION_SECONDS // 86400}d, or 'never'")
    return seconds
