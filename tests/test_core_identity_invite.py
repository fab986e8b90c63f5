"""Node and mesh ids, and invite tokens: encoding, decoding, refusal, and what core may import."""

from __future__ import annotations

import ast
import base64
import hashlib
import ipaddress
import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

import meshdesk.core
from meshdesk.core.identity import NODE_ID_LENGTH, mesh_id_for, node_id_for
from meshdesk.core.invite import (
    LINK_PREFIX,
    MAX_ADDRESSES,
    InviteToken,
    TokenError,
    TokenRefused,
    check_token,
    decode_token,
    parse_duration,
)

NOW = 1_800_000_000
HOUR = 3600
MESH_SECRET = b"the friends' mesh secret, 32 by."
OTHER_MESH_SECRET = b"another mesh entirely, 32 bytes."


class Signer:
    """A real Ed25519 key, as a node would hold it."""

    def __init__(self, seed: int):
        self.private_key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        self.public_key = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


INVITER = Signer(1)
STRANGER = Signer(2)


def make_token(addresses=(("192.168.1.20", 4433), ("203.0.113.7", 4433)), expires_at=NOW + HOUR,
               signer=INVITER, mesh_secret=MESH_SECRET, join_secret=bytes(range(16))) -> InviteToken:
    unsigned = InviteToken(mesh_id_for(mesh_secret), join_secret, INVITER.public_key, addresses, expires_at)
    return unsigned.signed(signer.sign)


def as_ips(addresses) -> list:
    return [(ipaddress.ip_address(host), port) for host, port in addresses]


def raw_bytes(encoded: str) -> bytes:
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def encoded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refusal(token: InviteToken, **context) -> TokenRefused:
    with pytest.raises(TokenRefused) as caught:
        check_token(token, now=context.pop("now", NOW), verify=verify, **context)
    return caught.value


# ---------------------------------------------------------------- identity


def test_node_id_is_a_prefix_of_the_public_keys_sha256():
    assert NODE_ID_LENGTH == 20
    assert node_id_for(INVITER.public_key) == hashlib.sha256(INVITER.public_key).hexdigest()[:20]
    assert node_id_for(INVITER.public_key) != node_id_for(STRANGER.public_key)


@pytest.mark.parametrize("key", [b"", b"\0" * 31, b"\0" * 33, "0" * 32])
def test_node_id_needs_a_raw_32_byte_key(key):
    with pytest.raises(ValueError, match="32 raw Ed25519 bytes"):
        node_id_for(key)


def test_mesh_id_is_domain_separated_from_a_plain_hash():
    expected = hashlib.sha256(b"meshdesk mesh id\0" + MESH_SECRET).hexdigest()[:16]
    assert mesh_id_for(MESH_SECRET) == expected
    assert expected != hashlib.sha256(MESH_SECRET).hexdigest()[:16]
    assert mesh_id_for(MESH_SECRET) != mesh_id_for(OTHER_MESH_SECRET)


# ---------------------------------------------------------------- encode / decode round trips

ROUND_TRIPS = {
    "two IPv4": (("192.168.1.20", 4433), ("203.0.113.7", 4433)),
    "one IPv6": (("2001:db8::1", 65535),),
    "mixed": (("10.0.0.2", 1), ("fe80::1", 4433), ("::ffff:1.2.3.4", 80)),
    "eight": tuple((f"10.0.0.{i}", 5000 + i) for i in range(1, 9)),
}


@pytest.mark.parametrize("addresses", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
@pytest.mark.parametrize("expires_at", [NOW + HOUR, 0], ids=["expiring", "never"])
def test_encode_decode_round_trip(addresses, expires_at):
    token = make_token(addresses, expires_at)
    decoded = decode_token(token.encode())
    assert decoded == token
    assert as_ips(decoded.addresses) == as_ips(addresses) and decoded.expires_at == expires_at
    assert decoded.encode() == token.encode()
    check_token(decoded, now=NOW, verify=verify, mesh_id=mesh_id_for(MESH_SECRET))


def test_addresses_are_normalised_so_equal_addresses_round_trip_equal():
    token = make_token([("2001:0db8:0000::0001", 4433)])
    assert token.addresses == (("2001:db8::1", 4433),)
    assert decode_token(token.encode()) == token


def test_token_for_two_ipv4_addresses_is_short_and_url_safe():
    text = make_token().encode()
    assert len(text) < 200
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_derived_ids():
    token = make_token()
    assert token.inviter_id == node_id_for(INVITER.public_key)
    assert token.token_id == hashlib.sha256(bytes(range(16))).hexdigest()[:16]


def test_signed_payload_is_domain_separated_and_excludes_the_signature():
    token = make_token()
    payload = token.signed_payload()
    assert payload.startswith(b"meshdesk invite v1\0")
    assert payload[len(b"meshdesk invite v1\0"):] + token.signature == raw_bytes(token.encode())
    assert replace(token, signature=b"").signed_payload() == payload


@pytest.mark.parametrize("text", [
    "{token}", "{link}", "  {token}\n", "\t{link}/ ", "{token}/", "MESHDESK://join/{token}",
])
def test_decode_accepts_links_whitespace_and_a_trailing_slash(text):
    token = make_token()
    assert token.link() == LINK_PREFIX + token.encode()
    assert decode_token(text.format(token=token.encode(), link=token.link())) == token


def test_an_unsigned_token_cannot_be_encoded():
    unsigned = replace(make_token(), signature=b"")
    with pytest.raises(ValueError, match="sign the invite token"):
        unsigned.encode()


@pytest.mark.parametrize("change, message", [
    ({"mesh_id": "ABCDEF0123456789"}, "mesh_id"),
    ({"join_secret": b"short"}, "join_secret"),
    ({"inviter_key": b"\0" * 31}, "inviter_key"),
    ({"addresses": ()}, "1 to 8 addresses"),
    ({"addresses": (("10.0.0.1", 1),) * 9}, "1 to 8 addresses"),
    ({"addresses": (("example.com", 443),)}, "IPv4 or IPv6 literal"),
    ({"addresses": (("0.0.0.0", 443),)}, "cannot be dialled"),
    ({"addresses": (("fe80::1%eth0", 443),)}, "scope"),
    ({"addresses": (("10.0.0.1", 0),)}, "port"),
    ({"addresses": (("10.0.0.1", 65536),)}, "port"),
    ({"expires_at": 2**32}, "expires_at"),
    ({"expires_at": -1}, "expires_at"),
    ({"signature": b"\0" * 63}, "signature"),
])
def test_building_a_bad_token_is_our_bug(change, message):
    with pytest.raises(ValueError, match=message) as caught:
        replace(make_token(), **change)
    assert not isinstance(caught.value, TokenError)


# ---------------------------------------------------------------- refusals


def flip_expiry_byte(text: str) -> str:
    data = bytearray(raw_bytes(text))
    at = bytes(data).index(struct.pack(">I", NOW + HOUR))
    data[at + 3] ^= 0x01
    return encoded(bytes(data))


def test_a_changed_expiry_is_tampering():
    tampered = decode_token(flip_expiry_byte(make_token().encode()))
    assert tampered.expires_at != NOW + HOUR
    error = refusal(tampered)
    assert error.reason == "tampered"
    assert str(error) == "invite token signature does not match: it was altered or forged"


def test_a_token_signed_by_another_key_is_tampering():
    assert refusal(make_token(signer=STRANGER)).reason == "tampered"


def test_an_unsigned_token_is_tampering():
    assert refusal(replace(make_token(), signature=b"")).reason == "tampered"


def test_signature_is_checked_before_anything_else():
    forged = make_token(signer=STRANGER, expires_at=NOW - HOUR)
    error = refusal(forged, mesh_id=mesh_id_for(OTHER_MESH_SECRET),
                    revoked_token_ids={forged.token_id}, removed_node_ids={forged.inviter_id})
    assert error.reason == "tampered"


def test_a_token_for_another_mesh_is_foreign():
    error = refusal(make_token(mesh_secret=OTHER_MESH_SECRET), mesh_id=mesh_id_for(MESH_SECRET))
    assert error.reason == "foreign"
    assert str(error).startswith(f"invite token is for another mesh ({mesh_id_for(OTHER_MESH_SECRET)})")


def test_a_token_from_a_removed_node_is_refused():
    token = make_token()
    error = refusal(token, removed_node_ids={token.inviter_id}, revoked_token_ids={token.token_id})
    assert error.reason == "removed-inviter"
    assert str(error) == "the node that issued this invite was removed from the mesh"


def test_a_revoked_token_is_refused():
    token = make_token(expires_at=NOW - HOUR)
    error = refusal(token, revoked_token_ids={"0" * 16, token.token_id})
    assert (error.reason, str(error)) == ("revoked", "invite token was revoked")


@pytest.mark.parametrize("late_by, ago", [
    (0, "just now"), (5, "5 s ago"), (3 * HOUR + 59, "3 h ago"), (20 * 60, "20 min ago"),
    (3 * 86400, "3 d ago"),
])
def test_an_expired_token_is_refused_saying_how_long_ago(late_by, ago):
    error = refusal(make_token(expires_at=NOW), now=NOW + late_by)
    assert (error.reason, str(error)) == ("expired", f"invite token expired {ago}")


def test_a_token_is_honoured_until_its_expiry_and_forever_when_it_never_expires():
    check_token(make_token(expires_at=NOW + 1), now=NOW + 0.5, verify=verify)
    check_token(make_token(expires_at=0), now=4e9, verify=verify, mesh_id=mesh_id_for(MESH_SECRET),
                revoked_token_ids={"0" * 16}, removed_node_ids={"1" * 20})


# ---------------------------------------------------------------- malformed text


@pytest.mark.parametrize("text, message", [
    ("", "not a MeshDesk invite token: it is empty"),
    ("   \n", "not a MeshDesk invite token: it is empty"),
    (LINK_PREFIX, "not a MeshDesk invite token: it is empty"),
    ("hello world", "not a MeshDesk invite token: unexpected character ' '"),
    ("https://example.com/join/abc", "not a MeshDesk invite token: a join link starts with meshdesk://join/"),
    ("abc=", "not a MeshDesk invite token: unexpected character '='"),
    ("////", "not a MeshDesk invite token: unexpected character '/'"),
    (b"bytes", "not a MeshDesk invite token: expected text, got bytes"),
])
def test_garbage_is_a_one_line_token_error(text, message):
    with pytest.raises(TokenError) as caught:
        decode_token(text)
    assert str(caught.value) == message


def test_every_truncation_of_a_valid_token_is_a_token_error():
    text = make_token().encode()
    for length in range(len(text)):
        with pytest.raises(TokenError, match="truncated|empty"):
            decode_token(text[:length])


def with_raw(text: str, edit) -> str:
    data = bytearray(raw_bytes(text))
    edit(data)
    return encoded(bytes(data))


ADDRESS_START = 62  # after version, mesh id, join secret, key, expiry and the address count


def set_byte(at: int, value: int):
    def edit(data: bytearray):
        data[at] = value
    return edit


def set_first_port(value: int):
    def edit(data: bytearray):
        data[ADDRESS_START + 5:ADDRESS_START + 7] = struct.pack(">H", value)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda data: data.extend(b"\0"), "invite token has 1 unexpected bytes at its end"),
    (set_byte(0, 7), "invite token version 7 is not supported"),
    (set_byte(0, 0), "not a MeshDesk invite token: its content is not in any known format"),
    (set_byte(0, 200), "not a MeshDesk invite token: its content is not in any known format"),
    (set_first_port(0), "invite token has an address with port 0"),
    (set_byte(ADDRESS_START, 5), "invite token has an address of unknown family 5"),
    (set_byte(ADDRESS_START - 1, 9), "invite token lists 9 addresses; it may list 1 to 8"),
    (set_byte(ADDRESS_START - 1, 0), "invite token lists 0 addresses; it may list 1 to 8"),
])
def test_malformed_content_is_a_one_line_token_error(edit, message):
    single = make_token(addresses=(("10.0.0.2", 4433),))
    with pytest.raises(TokenError, match=f"^{message}") as caught:
        decode_token(with_raw(single.encode(), edit))
    assert "\n" not in str(caught.value)


def test_an_undialable_address_on_the_wire_is_a_token_error():
    def unspecified(data: bytearray):
        data[ADDRESS_START + 1:ADDRESS_START + 5] = bytes(4)
    with pytest.raises(TokenError, match="^invite token is invalid: '0.0.0.0' cannot be dialled$"):
        decode_token(with_raw(make_token().encode(), unspecified))


def test_too_many_addresses_on_the_wire_is_refused_even_when_well_formed():
    nine = make_token(addresses=(("10.0.0.1", 1),) * MAX_ADDRESSES)
    one_more = b"\x04" + bytes([10, 0, 0, 9]) + struct.pack(">H", 9)

    def add_ninth(data: bytearray):
        data[ADDRESS_START - 1] = MAX_ADDRESSES + 1
        data[-64:-64] = one_more
    with pytest.raises(TokenError, match="lists 9 addresses"):
        decode_token(with_raw(nine.encode(), add_ninth))


def test_a_non_canonical_spelling_of_a_token_is_refused():
    text = make_token().encode()
    assert len(text) % 4 != 0  # so the last character carries unused low bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = text[:-1] + alphabet[alphabet.index(text[-1]) + 1]
    assert raw_bytes(sibling) == raw_bytes(text)
    with pytest.raises(TokenError, match="not canonical"):
        decode_token(sibling)


# ---------------------------------------------------------------- fuzzing

VALID = make_token().encode()


def decodes_only_to_its_own_spelling(text: str) -> None:
    """Either a one-line TokenError, or the token whose spelling is the text, give or take
    the surrounding whitespace and trailing slash that decode_token forgives."""
    try:
        token = decode_token(text)
    except TokenError as error:
        assert "\n" not in str(error) and str(error)
        return
    forgiven = text.strip()
    assert token.encode() == (forgiven[:-1] if forgiven.endswith("/") else forgiven)


@given(st.text())
def test_arbitrary_text_is_a_token_error_or_a_faithful_token(text):
    try:
        token = decode_token(text)
    except TokenError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert token.encode() in text and decode_token(token.encode()) == token


@given(st.data())
def test_mutated_text_is_a_token_error_or_a_faithful_token(data):
    position = data.draw(st.integers(0, len(VALID)))
    replacement = data.draw(st.text(alphabet=st.sampled_from("Aa09-_Zz=/ !é"), max_size=3))
    cut = data.draw(st.integers(0, 3))
    text = VALID[:position] + replacement + VALID[position + cut:]
    decodes_only_to_its_own_spelling(text)


@given(st.data())
def test_mutated_bytes_are_a_token_error_or_a_faithful_token(data):
    raw = bytearray(raw_bytes(VALID))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=20))
    text = encoded(bytes(raw))
    decodes_only_to_its_own_spelling(text)


# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1w", 604800),
    ("never", 0), (" Never ", 0), ("2H", 7200), ("15 m", 900), ("3650d", 3650 * 86400),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, message", [
    ("", "is not a duration"), ("30", "is not a duration"), ("m", "is not a duration"),
    ("1.5h", "is not a duration"), ("-1h", "is not a duration"), ("1y", "is not a duration"),
    ("1h30m", "is not a duration"), ("\u0663d", "is not a duration"),
    ("0m", "no time at all"), ("3651d", "too long"), ("9" * 5000 + "w", "too long"),
])
def test_parse_duration_rejects_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_duration(text)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- purity of core

CORE = Path(meshdesk.core.__file__).parent
CHECKED_MODULES = ("identity.py", "invite.py", "frames.py")
IMPURE = {"os", "time", "random", "secrets", "socket", "asyncio", "threading", "subprocess",
          "ssl", "selectors", "multiprocessing", "concurrent", "datetime", "uuid"}


def imported_top_level_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module)
    return names


def core_import_problems(source: str) -> list[str]:
    problems = []
    for name in sorted(imported_top_level_names(source)):
        top = name.split(".")[0]
        if name == "." or name.startswith("meshdesk.core"):
            continue
        if top not in sys.stdlib_module_names:
            problems.append(f"{name} is not in the standard library")
        elif top in IMPURE:
            problems.append(f"{name} brings IO, clocks or randomness")
    return problems


@pytest.mark.parametrize("module", CHECKED_MODULES)
def test_core_module_imports_only_pure_standard_library(module):
    assert core_import_problems((CORE / module).read_text(encoding="utf-8")) == []


def test_the_purity_check_catches_what_it_should():
    source = "import os\nimport time as t\nfrom cryptography import x\nimport json\nfrom . import identity\n"
    assert core_import_problems(source) == [
        "cryptography is not in the standard library", "os brings IO, clocks or randomness",
        "time brings IO, clocks or randomness"]
