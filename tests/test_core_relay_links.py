"""Links through a relay, in peer control (pure): a direct link replaces one through a relay,
whoever dialled it; failure detection gives a relayed link longer; relayed addresses are dialled
last; a member linked through a relay is dialled and punched towards again, now and then; and a
rendezvous never introduces anyone with the address of a relayed link."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from meshdesk.core import peer_control as pc
from meshdesk.core.dial_schedule import UPGRADE_DIAL_SECONDS, MeshDials
from meshdesk.core.gossip_values import MembershipError
from meshdesk.core.hole_punch import UPGRADE_ASK_INTERVAL, HolePunching
from meshdesk.core.link_book import LinkBook, LinkState
from meshdesk.core.link_watch import LINK_SILENT_SECONDS, RELAYED_SILENT_SECONDS, LinkWatch
from meshdesk.core.node_record import NodeRecord
from tests.test_core_peer_control import A1, B2, C3, make_control

RELAY_ADDRESS = ("198.51.100.7", 40001)


def closed(outputs) -> list[int]:
    return [output.link for output in outputs if isinstance(output, pc.CloseLink)]


@pytest.mark.parametrize("direct_dialled_by_us", [True, False])
def test_a_direct_link_replaces_one_through_a_relay_whoever_dialled_it(direct_dialled_by_us):
    for own, peer in ((A1, B2), (B2, A1)):
        control = make_control(own)
        control.link_up(0.0, 1, peer, dialled_by_us=own < peer, address=RELAY_ADDRESS, relayed=True)
        outputs = control.link_up(0.5, 2, peer, dialled_by_us=direct_dialled_by_us, address=("10.0.0.2", 9400))
        assert closed(outputs) == [1]
        assert control.link_to(peer).link == 2 and not control.link_to(peer).relayed


def test_a_link_through_a_relay_never_replaces_a_direct_one():
    control = make_control(A1)
    control.link_up(0.0, 1, B2, dialled_by_us=False, address=("10.0.0.2", 9400))  # not what the rule keeps
    outputs = control.link_up(0.5, 2, B2, dialled_by_us=True, address=RELAY_ADDRESS, relayed=True)
    assert closed(outputs) == [2] and control.link_to(B2).link == 1


def test_a_relayed_link_may_stay_silent_longer_before_its_peer_counts_as_unresponsive():
    watch = LinkWatch(0.0)
    direct = LinkState(1, B2, True, last_heard=0.0)
    relayed = LinkState(2, C3, True, last_heard=0.0, relayed=True)
    silent_at: dict[str, float] = {}
    for tick in range(1, 25):
        now = tick * 0.5  # the timer comes often: no stall of our own
        for peer in watch.silent_peers(now, [direct, relayed]):
            silent_at.setdefault(peer, now)
    assert silent_at[B2] == LINK_SILENT_SECONDS
    assert silent_at[C3] == RELAYED_SILENT_SECONDS > LINK_SILENT_SECONDS


def member(node_id: str, addresses, relayed_addresses=()):
    return SimpleNamespace(node_id=node_id, addresses=tuple(addresses), relayed_addresses=tuple(relayed_addresses),
                           rtt_ms={})


def test_relayed_addresses_are_dialled_after_the_members_own_ones():
    dials = MeshDials()
    record = member(B2, [("10.0.0.2", 9400), ("203.0.113.2", 9400)], [RELAY_ADDRESS])
    order = []
    for second in range(3):
        for dial in dials.due(second * 10.0, A1, [record], {}, set()):
            order.append(dial.address)
            dials.ended(dial.address)
    assert order == [("10.0.0.2", 9400), ("203.0.113.2", 9400), RELAY_ADDRESS]


def test_a_member_linked_through_a_relay_has_its_own_addresses_dialled_now_and_then():
    dials = MeshDials()
    record = member(B2, [("10.0.0.2", 9400)], [RELAY_ADDRESS])
    times = []
    now = 0.0
    while now < 3 * UPGRADE_DIAL_SECONDS:
        for dial in dials.due(now, A1, [record], {B2: 1}, {B2}):
            assert dial.address == ("10.0.0.2", 9400)  # never the relay again: that link exists
            times.append(now)
            dials.ended(dial.address)
        now += 1.0
    assert times == [0.0, UPGRADE_DIAL_SECONDS, 2 * UPGRADE_DIAL_SECONDS]
    assert dials.due(now, A1, [record], {B2: 1}, set()) == []  # linked directly: nothing to do


def book_with(*states: LinkState) -> LinkBook:
    book = LinkBook()
    for state in states:
        book.add(state)
    return book


def test_a_pair_linked_through_a_relay_asks_for_a_punch_again_every_upgrade_interval():
    punching = HolePunching()
    book = book_with(LinkState(1, C3, True, address=("198.51.100.3", 9400)),
                     LinkState(2, B2, True, address=RELAY_ADDRESS, relayed=True))
    records = [SimpleNamespace(node_id=B2, rtt_ms={C3: 1.0, A1: 9.0})]
    asked = [now for now in range(0, 95) if punching.asks(float(now), A1, records, book)]
    assert asked == [2, 2 + UPGRADE_ASK_INTERVAL, 2 + 2 * UPGRADE_ASK_INTERVAL, 2 + 3 * UPGRADE_ASK_INTERVAL]


def test_a_rendezvous_introduces_nobody_with_the_address_of_a_relayed_link():
    punching = HolePunching()
    asker = LinkState(1, A1, False, address=("198.51.100.1", 9400))
    target = LinkState(2, B2, False, address=RELAY_ADDRESS, relayed=True)
    book = book_with(asker, target)
    assert punching.received(0.0, asker, {"type": "punch-ask", "to": B2}, book, {A1, B2}) == []


def test_a_punch_towards_a_member_linked_only_through_a_relay_is_taken():
    punching = HolePunching()
    rendezvous = LinkState(1, C3, True, address=("198.51.100.3", 9400))
    book = book_with(rendezvous, LinkState(2, B2, True, address=RELAY_ADDRESS, relayed=True))
    message = {"type": "punch", "peer": B2, "address": ["203.0.113.2", 9400]}
    assert [punch.peer_id for punch in punching.received(0.0, rendezvous, message, book, {B2, C3})] == [B2]


def test_records_carry_relayed_addresses_and_relays_and_old_records_read_without_them():
    record = make_control(A1).membership.own
    wire = {**record.to_wire(), "relayed_addresses": [list(RELAY_ADDRESS)], "relays": [["relay.example.org", 9338]]}
    again = NodeRecord.from_wire(wire)
    assert again.relayed_addresses == (RELAY_ADDRESS,) and again.relays == (("relay.example.org", 9338),)
    old = {name: value for name, value in record.to_wire().items() if name not in ("relayed_addresses", "relays")}
    assert NodeRecord.from_wire(old).relayed_addresses == () and NodeRecord.from_wire(old).relays == ()
    for bad in ([["198.51.100.7"]], [["198.51.100.7", 0]], [[""] * 2], [list(RELAY_ADDRESS)] * 5, "198.51.100.7"):
        with pytest.raises(MembershipError):
            NodeRecord.from_wire({**wire, "relayed_addresses": bad})
