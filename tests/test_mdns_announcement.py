"""core.lan_discovery: an mDNS announcement that only holders of the node's key recognise, read
defensively, and the LAN candidates it lends (pure; on real multicast: tests/test_mdns.py)."""

from __future__ import annotations

import os

from meshdesk.core.identity import node_id_for
from meshdesk.core.lan_discovery import (LAN_DIAL_SECONDS, MAX_CANDIDATES, MAX_KEPT_ADDRESSES, SALT_BYTES,
                                         LanCandidates, announcement, heard, recognise)

KEY, OTHER_KEY = bytes(range(32)), bytes(range(1, 33))
NODE, OTHER = node_id_for(KEY), node_id_for(OTHER_KEY)
LAN = ("192.168.1.20", 4242)


def as_zeroconf_gives(properties: dict[str, str]) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in properties.items()}


def test_only_a_holder_of_the_key_recognises_the_announcement():
    properties = as_zeroconf_gives(announcement(KEY, os.urandom(SALT_BYTES)))
    found = heard(properties, [LAN[0]], LAN[1])
    assert found is not None and found.addresses == (LAN,)
    assert recognise(found, {OTHER: OTHER_KEY, NODE: KEY}) == NODE
    assert recognise(found, {OTHER: OTHER_KEY}) is None


def test_the_announcement_names_nothing_and_two_salts_cannot_be_linked():
    first, second = (announcement(KEY, os.urandom(SALT_BYTES)) for _ in range(2))
    text = repr(first)
    assert NODE not in text and KEY.hex() not in text and set(first) == {"v", "s", "t"}
    assert first["t"] != second["t"] and first["s"] != second["s"]


def test_a_copied_salt_with_another_tag_is_nobody():
    properties = announcement(KEY, os.urandom(SALT_BYTES))
    forged = {**properties, "t": "00" * 16}
    assert recognise(heard(as_zeroconf_gives(forged), [LAN[0]], LAN[1]), {NODE: KEY}) is None


def test_malformed_or_foreign_announcements_are_ignored():
    good = as_zeroconf_gives(announcement(KEY, os.urandom(SALT_BYTES)))
    for properties in ({}, {**good, b"v": b"2"}, {**good, b"s": b"zz"}, {**good, b"t": b"00"},
                       {**good, b"s": None}, {**good, b"t": "é".encode()}):
        assert heard(properties, [LAN[0]], LAN[1]) is None
    assert heard(good, [LAN[0]], "4242") is None
    assert heard(good, ["127.0.0.1", "169.254.0.9", "not an address"], 4242) is None  # nothing to dial


def test_an_announcement_lends_a_few_usable_addresses_and_a_node_keeps_its_last_few():
    many = [f"192.168.1.{index}" for index in range(1, 20)]
    found = heard(as_zeroconf_gives(announcement(KEY, os.urandom(SALT_BYTES))), ["127.0.0.1", *many], 4242)
    assert found.addresses == tuple((host, 4242) for host in many[:MAX_CANDIDATES])
    candidates = LanCandidates()
    candidates.heard_from(NODE, (LAN,))
    candidates.heard_from(NODE, (("10.0.0.66", 1),))  # a copy next to someone else's address
    assert candidates.addresses_of(NODE) == [("10.0.0.66", 1), LAN]  # the real one stays
    for index in range(MAX_KEPT_ADDRESSES):
        candidates.heard_from(NODE, ((f"10.0.1.{index}", 1),))
    assert len(candidates.addresses_of(NODE)) == MAX_KEPT_ADDRESSES


def test_a_member_is_dialled_over_the_lan_once_in_a_while():
    candidates = LanCandidates()
    assert candidates.take_dial(0.0, NODE) == []  # never heard
    candidates.heard_from(NODE, (LAN,))
    assert candidates.take_dial(0.0, NODE) == [LAN]
    assert candidates.take_dial(LAN_DIAL_SECONDS - 1, NODE) == []
    assert candidates.take_dial(LAN_DIAL_SECONDS, NODE) == [LAN]
