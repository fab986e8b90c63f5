"""Hole punching in peer control (`core.hole_punch`), on the simulated links of
tests/test_core_peer_control.py: two members that no dial reaches meet through a third.

The simulation stands for the routers: a member "behind NAT" is never reached by a dial, and
its links come from its public address; a punch links a pair when both punched towards each
other's public address within one PUNCH_GAP, as two endpoint-independent routers would let
them."""

from __future__ import annotations

import dataclasses

import pytest

from meshdesk.core import hole_punch
from meshdesk.core import peer_control as pc
from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.hole_punch import HolePunching
from meshdesk.core.link_book import LinkBook, LinkState
from tests.gossip_keys import ID
from tests.test_core_peer_control import A1, B2, C3, THREE, SimulatedLinks, address_of, make_control


def public_address(node_id: str) -> tuple[str, int]:
    return (f"198.18.0.{100 + ord(node_id[0]) - 96}", 20001)


class NattedLinks(SimulatedLinks):
    """`natted` members: unreachable at their record's address, seen from their public one."""

    def __init__(self, node_ids, natted, **options):
        super().__init__(node_ids, **options)
        self.natted = set(natted)
        self.unreachable |= {address_of(node_id) for node_id in natted}
        self.punches: list[tuple[float, str, hole_punch.Punch]] = []

    def seen_at(self, node_id: str) -> tuple[str, int]:
        return public_address(node_id) if node_id in self.natted else address_of(node_id)

    def link(self, dialler: str, acceptor: str) -> tuple[int, int]:
        near, far = next(self.numbers), next(self.numbers)
        self.ends[near], self.ends[far] = (dialler, far), (acceptor, near)
        self.apply(acceptor, self.nodes[acceptor].link_up(self.now, far, dialler, False, self.seen_at(dialler)))
        if near in self.ends:
            self.apply(dialler, self.nodes[dialler].link_up(self.now, near, acceptor, True, self.seen_at(acceptor)))
        return near, far

    def apply(self, node_id: str, outputs) -> None:
        super().apply(node_id, outputs)
        for output in outputs:
            if isinstance(output, hole_punch.Punch):
                self.punched(node_id, output)

    def punched(self, node_id: str, punch: hole_punch.Punch) -> None:
        self.punches.append((self.now, node_id, punch))
        answered = any(who == punch.peer_id and theirs.peer_id == node_id and self.now - when < hole_punch.PUNCH_GAP
                       and theirs.address == self.seen_at(node_id) for when, who, theirs in self.punches[:-1])
        if answered and punch.address == self.seen_at(punch.peer_id) and punch.peer_id not in self.linked(node_id):
            self.link(*sorted((node_id, punch.peer_id)))


def test_two_members_no_dial_reaches_link_through_a_third_they_both_reach():
    mesh = NattedLinks(THREE, natted={A1, B2})
    mesh.link(A1, C3)  # both joined through c3, the public one
    mesh.link(B2, C3)
    assert mesh.run_until(lambda: B2 in mesh.linked(A1), limit=30.0) is not None
    # a1, the lower id, asked c3; c3 told each where it sees the other
    asks = [(node, output) for node, output in mesh.events
            if isinstance(output, pc.SendMessage) and output.message["type"] == "punch-ask"]
    assert asks and all(node == A1 and output.message["to"] == B2 for node, output in asks)
    assert {(who, punch.peer_id, punch.address) for _, who, punch in mesh.punches} == {
        (A1, B2, public_address(B2)), (B2, A1, public_address(A1))}


def test_a_pair_that_links_by_dialling_never_asks_for_a_punch():
    mesh = NattedLinks(THREE, natted=set())
    mesh.link(A1, C3)
    mesh.link(B2, C3)
    mesh.run_for(30.0)
    assert mesh.fully_linked() and not mesh.punches
    assert not any(isinstance(output, pc.SendMessage) and output.message["type"].startswith("punch")
                   for _, output in mesh.events)


def test_a_punch_that_fails_is_asked_again_at_the_interval_and_no_faster():
    mesh = NattedLinks(THREE, natted={A1, B2})
    mesh.punched = lambda node_id, punch: mesh.punches.append((mesh.now, node_id, punch))  # symmetric routers
    mesh.link(A1, C3)
    mesh.link(B2, C3)
    mesh.run_for(60.0)
    times = sorted({round(when, 1) for when, who, _ in mesh.punches if who == A1})
    assert len(times) >= 4 and B2 not in mesh.linked(A1)
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(gap >= hole_punch.ASK_INTERVAL - 0.1 for gap in gaps)
    assert mesh.alive(A1) == set(THREE)  # c3's gossip still carries b2


def control_with_links():
    """c3 (the rendezvous) linked to a1 and b2, as the node's loop would have it."""
    mesh = NattedLinks(THREE, natted={A1, B2})
    a_end, c_end_a = mesh.link(A1, C3)
    b_end, c_end_b = mesh.link(B2, C3)
    mesh.run_for(3.0)
    return mesh, c_end_a, c_end_b


def introductions(outputs) -> list[tuple[int, dict]]:
    return [(output.link, output.message) for output in outputs
            if isinstance(output, pc.SendMessage) and output.message["type"] == "punch"]


def test_the_rendezvous_introduces_a_pair_once_per_gap_and_never_a_member_to_itself():
    mesh, from_a, from_b = control_with_links()
    rendezvous = mesh.nodes[C3]
    first = introductions(rendezvous.message_received(mesh.now, from_a, hole_punch.ask_message(B2)))
    assert first == [(from_b, hole_punch.introduction(A1, public_address(A1))),
                     (from_a, hole_punch.introduction(B2, public_address(B2)))]
    again = rendezvous.message_received(mesh.now + 0.5, from_b, hole_punch.ask_message(A1))
    assert not introductions(again)  # the same pair, within the gap
    assert not introductions(rendezvous.message_received(mesh.now + 5, from_a, hole_punch.ask_message(A1)))
    assert not introductions(rendezvous.message_received(mesh.now + 5, from_a, hole_punch.ask_message("x" * 64)))


def test_a_punch_towards_a_stranger_ourselves_or_a_linked_member_is_not_taken():
    mesh, from_a, _ = control_with_links()
    a1 = mesh.nodes[A1]
    end_to_c = a1.link_to(C3).link
    for peer in ("f" * 64, A1, C3):
        assert not a1.message_received(mesh.now, end_to_c, hole_punch.introduction(peer, ("198.18.0.9", 9)))
    taken = a1.message_received(mesh.now, end_to_c, hole_punch.introduction(B2, ("198.18.0.9", 9)))
    assert taken == [hole_punch.Punch(B2, ("198.18.0.9", 9))]
    assert not a1.message_received(mesh.now + 1, end_to_c, hole_punch.introduction(B2, ("198.18.0.9", 9)))


@pytest.mark.parametrize("message", [
    {"type": "punch-ask"},
    {"type": "punch-ask", "to": 7},
    {"type": "punch-ask", "to": "x" * 65},
    {"type": "punch", "peer": B2},
    {"type": "punch", "peer": B2, "address": ["198.18.0.9"]},
    {"type": "punch", "peer": B2, "address": ["198.18.0.9", "9"]},
    {"type": "punch", "peer": B2, "address": ["198.18.0.9", 70000]},
    {"type": "punch", "peer": B2, "address": ["router.example", 9]},
    {"type": "punch", "peer": B2, "address": ["224.0.0.251", 5353]},
    {"type": "punch", "peer": B2, "address": ["0.0.0.0", 9]},
])
def test_a_malformed_punch_message_drops_only_its_sender(message):
    mesh, _, _ = control_with_links()
    a1 = mesh.nodes[A1]
    outputs = a1.message_received(mesh.now, a1.link_to(C3).link, message)
    broke = [output for output in outputs if isinstance(output, pc.PeerBrokeProtocol)]
    assert len(broke) == 1 and broke[0].peer_id == C3 and isinstance(broke[0].error, PeerProtocolError)
    assert not any(isinstance(output, hole_punch.Punch) for output in outputs)


def book_with(*peers: str) -> LinkBook:
    book = LinkBook()
    for number, peer_id in enumerate(peers, start=1):
        book.add(LinkState(number, peer_id, dialled_by_us=True, address=public_address(peer_id)))
    return book


def test_a_liars_introductions_do_not_crowd_out_an_honest_ones():
    punching, book = HolePunching(), book_with(A1, C3)  # we are linked to a liar (a1) and to c3
    liar, honest = book.to(A1), book.to(C3)
    trap, real = ("203.0.113.9", 4000), public_address(B2)
    assert punching.received(0.0, liar, hole_punch.introduction(B2, trap), book, {A1, B2, C3}) == \
        [hole_punch.Punch(B2, trap)]
    assert punching.received(0.1, honest, hole_punch.introduction(B2, real), book, {A1, B2, C3}) == \
        [hole_punch.Punch(B2, real)]
    assert punching.received(0.2, liar, hole_punch.introduction(B2, trap), book, {A1, B2, C3}) == []


def test_the_asker_takes_its_rendezvous_in_turn():
    """One that never answers (or lies) is not the only one ever asked."""
    punching, book = HolePunching(), book_with(B2, C3)
    target = make_control(ID["d4"]).membership.own
    target = dataclasses.replace(target, rtt_ms={B2: 1.0, C3: 1.0})
    assert punching.asks(0.0, A1, [target], book) == []  # a direct dial gets its chance first
    asked = [link for step in range(4)
             for link, _ in punching.asks(hole_punch.ASK_AFTER_SECONDS + step * hole_punch.ASK_INTERVAL,
                                          A1, [target], book)]
    assert len(asked) == 4 and sorted(set(asked)) == [book.by_peer[B2], book.by_peer[C3]]
