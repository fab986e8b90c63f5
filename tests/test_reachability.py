"""core.reachability: which addresses peers report, and which of them a node may advertise.
Pure: a manual clock, member ids as plain strings."""

from __future__ import annotations

from meshdesk.core.reachability import (CONFIRMING_REPORTERS, MAX_ADVERTISED, MAX_REPORTERS,
                                        REPORT_LINGER_SECONDS, Direction, Reachability)

INBOUND, OUTBOUND = Direction.INBOUND, Direction.OUTBOUND
PUBLIC = ("198.51.100.7", 4242)


def test_one_member_alone_cannot_make_us_advertise_an_address():
    reach = Reachability()
    assert reach.report(0.0, "mallory", PUBLIC, INBOUND)
    reach.report(1.0, "mallory", PUBLIC, INBOUND)  # again: still one reporter
    assert reach.advertised(2.0) == []
    assert [entry.reporters for entry in reach.observed(2.0)] == [1]


def test_two_members_that_agree_confirm_an_inbound_address():
    reach = Reachability()
    for member in ("alice", "bob")[:CONFIRMING_REPORTERS]:
        reach.report(0.0, member, PUBLIC, INBOUND)
    assert reach.advertised(1.0) == [PUBLIC]
    assert reach.observed(1.0)[0].to_wire() == {"address": list(PUBLIC), "direction": "inbound",
                                                "reporters": 2, "advertised": True}


def test_outbound_observations_are_shown_but_never_advertised():
    reach = Reachability()  # a dial's fresh socket: nothing listens at that port afterwards
    reach.report(0.0, "alice", PUBLIC, OUTBOUND)
    reach.report(0.0, "bob", PUBLIC, OUTBOUND)
    assert reach.advertised(1.0) == []
    assert reach.observed(1.0)[0].direction is OUTBOUND


def test_loopback_link_local_multicast_and_junk_are_ignored():
    reach = Reachability()
    for address in (("127.0.0.1", 1), ("::1", 1), ("169.254.1.1", 9), ("fe80::1", 9), ("224.0.0.251", 5353),
                    ("0.0.0.0", 9), ("240.0.0.1", 9), ("example.com", 9), ("198.51.100.7", 0)):
        for member in ("alice", "bob"):
            assert not reach.report(0.0, member, address, INBOUND), address
    assert reach.observed(0.0) == []


def test_an_address_we_advertise_already_is_not_added_again():
    reach = Reachability([PUBLIC])
    reach.report(0.0, "alice", PUBLIC, INBOUND)
    reach.report(0.0, "bob", PUBLIC, INBOUND)
    assert reach.advertised(0.0) == []


def test_a_member_has_one_report_its_latest():
    reach = Reachability()
    reach.report(0.0, "alice", PUBLIC, INBOUND)
    reach.report(0.0, "bob", PUBLIC, INBOUND)
    reach.report(1.0, "bob", ("198.51.100.8", 1), INBOUND)  # bob changed its mind
    assert reach.advertised(2.0) == []


def test_reports_lapse_after_their_link_and_come_back_with_it():
    reach = Reachability()
    reach.report(0.0, "alice", PUBLIC, INBOUND)
    reach.report(0.0, "bob", PUBLIC, INBOUND)
    reach.reporter_gone(10.0, "bob")
    assert reach.advertised(10.0 + REPORT_LINGER_SECONDS - 1) == [PUBLIC]
    assert reach.advertised(10.0 + REPORT_LINGER_SECONDS) == []
    reach.reporter_back("bob")
    assert reach.advertised(10.0 + 2 * REPORT_LINGER_SECONDS) == [PUBLIC]


def test_at_most_a_few_addresses_are_advertised_and_the_table_is_bounded():
    reach = Reachability()
    for index in range(MAX_ADVERTISED + 2):
        for side in ("a", "b"):
            reach.report(float(index), f"{side}{index}", (f"198.51.100.{index + 1}", 9), INBOUND)
    assert len(reach.advertised(100.0)) == MAX_ADVERTISED
    for index in range(MAX_REPORTERS * 2):
        reach.report(200.0 + index, f"flood{index}", (f"203.0.113.{index % 200 + 1}", 9), INBOUND)
    assert sum(entry.reporters for entry in reach.observed(1000.0)) == MAX_REPORTERS


def test_the_auth_message_carries_an_observation_and_refuses_a_malformed_one():
    import pytest

    from meshdesk.core.handshake import Auth, HandshakeError, parse_auth
    auth = Auth(b"s" * 64, b"m" * 32, observed=PUBLIC)
    assert parse_auth(auth.to_wire()).observed == PUBLIC
    assert parse_auth(Auth(b"s" * 64, None).to_wire()).observed is None  # an older build sends none
    for bad in ("198.51.100.7:4242", ["198.51.100.7"], ["x" * 65, 1], [PUBLIC[0], "4242"], [PUBLIC[0], 70000]):
        with pytest.raises(HandshakeError):
            parse_auth({**auth.to_wire(), "observed": bad})
