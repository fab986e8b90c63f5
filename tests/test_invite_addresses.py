"""core.reachability.invite_addresses: what an invite carries, from our own addresses and the
ones members confirm they reach us at. (End to end, in the NAT lab: a joiner on the internet
joins a node at home through the address two members confirmed, tests/test_reachability_attacks.py.)"""

from __future__ import annotations

from meshdesk.core.invite import MAX_ADDRESSES
from meshdesk.core.reachability import invite_addresses

LAN, VPN, LOOPBACK = ("192.168.1.20", 4242), ("10.8.0.2", 4242), ("127.0.0.1", 4242)
FORWARDED = ("198.51.100.7", 4242)


def test_the_outward_address_comes_first_then_the_confirmed_ones_then_the_rest():
    assert invite_addresses([LAN, VPN, LOOPBACK], [FORWARDED], MAX_ADDRESSES) == [LAN, FORWARDED, VPN, LOOPBACK]


def test_without_confirmed_addresses_an_invite_carries_our_own_as_before():
    assert invite_addresses([LAN, LOOPBACK], [], MAX_ADDRESSES) == [LAN, LOOPBACK]


def test_an_address_is_carried_once_and_the_cap_keeps_the_confirmed_ones():
    own = [(f"10.0.0.{index}", 4242) for index in range(1, MAX_ADDRESSES + 1)]
    carried = invite_addresses(own, [FORWARDED, own[0]], MAX_ADDRESSES)
    assert len(carried) == MAX_ADDRESSES == len(set(carried))
    assert carried[:2] == [own[0], FORWARDED]
