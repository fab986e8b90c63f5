"""Peer control, driven by a manual clock over an in-memory network of links that can lose,
delay and reorder messages. Dials, link ups and closes are carried out by the simulation as
the node's IO loop would. No real time, no sleeps."""

from __future__ import annotations

import heapq
import itertools
import json
import random

import pytest

from meshdesk.core import peer_control as pc
from meshdesk.core.link_book import RTT_WINDOW
from meshdesk.core.dial_schedule import DIAL_RETRY_SECONDS
from meshdesk.core.errors import Fault, PeerProtocolError
from meshdesk.core.membership import Membership
from meshdesk.core.node_record import NodeRecord
from tests.gossip_keys import ID, key_hex, sign_as, verify

PORT = 9400
A1, B2, C3 = ID["a1"], ID["b2"], ID["c3"]  # ids that sort as their labels do
THREE = (A1, B2, C3)


def address_of(node_id: str) -> tuple[str, int]:
    return (f"10.0.0.{ord(node_id[0]) - 96}", PORT)


def make_control(node_id: str, now: float = 0.0) -> pc.PeerControl:
    label = ID.label(node_id)
    record = NodeRecord(node_id=node_id, name=f"node {node_id}", addresses=(address_of(node_id),),
                        capacity_bytes=2**30, models=(), serving=None, role="standby",
                        versions={"protocol": 1}, rtt_ms={}, public_key=key_hex(label), generation=1)
    membership = Membership(record, sign=sign_as(label), verify=verify, authority_key=key_hex("a1"),
                            suspect_after=3.0, dead_after=6.0, heartbeat_interval=1.0)
    return pc.PeerControl(membership, now, [address_of(node_id)])


class SimulatedLinks:
    """PeerControl machines on one clock; links are pairs of numbered ends."""

    def __init__(self, node_ids, *, seed=0, delay=0.01, jitter=0.0, loss=0.0):
        self.now = 0.0
        self.random = random.Random(seed)
        self.delay, self.jitter, self.loss = delay, jitter, loss
        self.nodes = {node_id: make_control(node_id) for node_id in node_ids}
        self.numbers = itertools.count(1)
        self.ends: dict[int, tuple[str, int]] = {}   # link end -> (its node, the far end)
        self.in_flight: list = []
        self.sequence = itertools.count()
        self.unreachable: set[tuple[str, int]] = set()
        self.hanging: set[tuple[str, int]] = set()
        self.dials: list[tuple[float, str, tuple[str, int]]] = []
        self.events: list[tuple[str, object]] = []
        self.protocol_errors: list[tuple[str, PeerProtocolError]] = []

    # ---- what the IO loop would do

    def link(self, dialler: str, acceptor: str) -> tuple[int, int]:
        near, far = next(self.numbers), next(self.numbers)
        self.ends[near], self.ends[far] = (dialler, far), (acceptor, near)
        self.apply(acceptor, self.nodes[acceptor].link_up(self.now, far, dialler, dialled_by_us=False))
        if near in self.ends:  # the acceptor may have closed it at once, as a duplicate
            self.apply(dialler, self.nodes[dialler].link_up(self.now, near, acceptor, dialled_by_us=True))
        return near, far

    def apply(self, node_id: str, outputs) -> None:
        for output in outputs:
            self.events.append((node_id, output))
            if isinstance(output, pc.SendMessage):
                self.transmit(output.link, output.message)
            elif isinstance(output, pc.CloseLink):
                self.close(output.link)
            elif isinstance(output, pc.DialAddress):
                self.dial(node_id, output.address)
            elif isinstance(output, pc.RefreshOwnRecord):
                self.apply(node_id, self.nodes[node_id].update_own(self.now, {}))
            elif isinstance(output, pc.PeerBrokeProtocol):
                self.protocol_errors.append((node_id, output.error))

    def dial(self, node_id: str, address: tuple[str, int]) -> None:
        self.dials.append((self.now, node_id, address))
        if address in self.hanging:
            return  # a dial still under way: it ends when the test says so
        target = next((other for other in self.nodes if address_of(other) == address), None)
        if target is not None and address not in self.unreachable and target != node_id:
            self.link(node_id, target)
        self.nodes[node_id].dial_ended(self.now, address)

    def transmit(self, end: int, message: dict) -> None:
        if end not in self.ends or self.random.random() < self.loss:
            return
        arrival = self.now + self.delay + self.random.uniform(0, self.jitter)
        heapq.heappush(self.in_flight, (arrival, next(self.sequence), self.ends[end][1], json.dumps(message)))

    def close(self, end: int) -> None:
        """Either end closing takes down both, as a real connection does."""
        for number in (end, self.ends.get(end, (None, None))[1]):
            if number in self.ends:
                owner, _ = self.ends.pop(number)
                self.apply(owner, self.nodes[owner].link_down(self.now, number))

    # ---- running

    def run_until(self, condition, limit: float) -> float | None:
        start, end = self.now, self.now + limit
        while not condition():
            deadlines = [node.next_deadline() for node in self.nodes.values()]
            next_time = min([self.in_flight[0][0]] if self.in_flight else []
                            + [deadline for deadline in deadlines if deadline is not None], default=end + 1)
            if next_time > end:
                self.now = end
                return None
            self.now = max(self.now, next_time)
            while self.in_flight and self.in_flight[0][0] <= self.now:
                _, _, end_number, text = heapq.heappop(self.in_flight)
                if end_number in self.ends:
                    owner = self.ends[end_number][0]
                    self.apply(owner, self.nodes[owner].message_received(self.now, end_number, json.loads(text)))
            for node_id, node in self.nodes.items():
                self.apply(node_id, node.handle_timer(self.now))
                deadline = node.next_deadline()
                assert deadline is None or deadline > self.now, "a deadline in the past would make the loop spin"
        return self.now - start

    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    # ---- views

    def linked(self, node_id: str) -> set[str]:
        return set(self.nodes[node_id].linked_peers())

    def fully_linked(self) -> bool:
        return all(self.linked(node_id) == set(self.nodes) - {node_id} for node_id in self.nodes)

    def alive(self, observer: str) -> set[str]:
        return {record.node_id for record in self.nodes[observer].membership.alive_records(self.now)}


# ---------------------------------------------------------------- forming a mesh


def test_joiners_of_one_founder_end_up_linked_with_each_other():
    mesh = SimulatedLinks(THREE)
    mesh.link(B2, A1)   # both joined through a1
    mesh.link(C3, A1)
    assert mesh.run_until(mesh.fully_linked, limit=5.0) is not None
    assert all(mesh.alive(node_id) == set(THREE) for node_id in THREE)
    # b2 and c3 learned of each other by gossip; the lower id dialled
    assert any(dialler == B2 and address == address_of(C3) for _, dialler, address in mesh.dials)
    assert not any(dialler == C3 and address == address_of(B2) for _, dialler, address in mesh.dials)


@pytest.mark.parametrize("seed", range(4))
def test_links_form_under_loss_delay_and_reordering(seed):
    mesh = SimulatedLinks(THREE, seed=seed, delay=0.02, jitter=0.3, loss=0.2)
    mesh.link(B2, A1)
    mesh.link(C3, A1)
    assert mesh.run_until(lambda: mesh.fully_linked() and all(mesh.alive(n) == set(THREE) for n in THREE),
                          limit=15.0) is not None


def test_an_alone_node_dials_where_members_were_last_seen_but_never_itself():
    mesh = SimulatedLinks((A1, B2))
    mesh.nodes[B2].set_fallback_addresses([address_of(B2), address_of(A1)])
    assert mesh.run_until(lambda: mesh.linked(B2) == {A1}, limit=1.0) is not None
    assert all(address != address_of(B2) for _, _, address in mesh.dials)


def test_an_unreachable_address_is_retried_at_the_retry_interval_and_no_faster():
    mesh = SimulatedLinks((A1,))
    mesh.unreachable.add(("10.9.9.9", PORT))
    mesh.nodes[A1].set_fallback_addresses([("10.9.9.9", PORT)])
    mesh.run_for(10.0)
    times = [when for when, _, address in mesh.dials if address == ("10.9.9.9", PORT)]
    assert times == [DIAL_RETRY_SECONDS * step for step in range(6)]  # 0, 2, ... 10 s


def test_an_address_is_never_dialled_twice_at_once():
    mesh = SimulatedLinks((A1,))
    slow = ("10.9.9.8", PORT)
    mesh.hanging.add(slow)
    mesh.nodes[A1].set_fallback_addresses([slow])
    mesh.run_for(10.0)
    assert [address for _, _, address in mesh.dials] == [slow]
    mesh.nodes[A1].dial_ended(mesh.now, slow)  # it gave up at last
    mesh.run_for(0.1)
    assert [address for _, _, address in mesh.dials] == [slow, slow]


# ---------------------------------------------------------------- duplicate links


@pytest.mark.parametrize("first", [A1, B2])
def test_of_two_links_both_ends_keep_the_one_the_lower_id_dialled(first):
    mesh = SimulatedLinks((A1, B2))
    second = B2 if first == A1 else A1
    by_first = mesh.link(first, second)
    by_second = mesh.link(second, first)
    kept_ends = by_first if first == A1 else by_second
    lost_ends = by_second if first == A1 else by_first
    assert mesh.nodes[A1].link_to(B2).link == kept_ends[0]
    assert mesh.nodes[B2].link_to(A1).link == kept_ends[1]
    assert lost_ends[0] not in mesh.ends and lost_ends[1] not in mesh.ends
    mesh.run_for(2.0)
    assert mesh.linked(A1) == {B2} and mesh.linked(B2) == {A1}


def test_losing_a_duplicate_does_not_disconnect_the_peer_from_gossip():
    mesh = SimulatedLinks((A1, B2))
    mesh.link(A1, B2)
    mesh.link(B2, A1)  # loses at once
    mesh.run_for(8.0)      # longer than dead_after: heartbeats must still flow
    assert mesh.alive(A1) == {A1, B2} and mesh.alive(B2) == {A1, B2}


def test_a_restarted_peer_replaces_the_silent_link_it_left_behind():
    mesh = SimulatedLinks((A1, B2))
    old = mesh.link(A1, B2)     # the lower id dialled: this link would win any tie
    mesh.run_for(2.0)
    # b2 is killed and restarts with no links: a1's end of the old link hears nothing more
    del mesh.ends[old[1]]
    mesh.nodes[B2] = make_control(B2, now=mesh.now)
    mesh.run_for(pc.STALE_LINK_SECONDS / 2)
    fresh = mesh.link(B2, A1)   # too soon: the old link may still be alive
    assert mesh.nodes[A1].link_to(B2).link == old[0] and fresh[1] not in mesh.ends
    mesh.run_for(pc.STALE_LINK_SECONDS)
    fresh = mesh.link(B2, A1)
    assert mesh.nodes[A1].link_to(B2).link == fresh[1]
    assert mesh.nodes[B2].link_to(A1).link == fresh[0]


# ---------------------------------------------------------------- round trips


def test_ping_round_trips_are_measured_and_gossiped():
    mesh = SimulatedLinks((A1, B2), delay=0.02)
    mesh.link(A1, B2)
    mesh.run_for(12.0)
    rtt = mesh.nodes[A1].link_to(B2).rtt_ms
    assert rtt == pytest.approx(40.0, abs=0.5)
    b2_as_seen_by_a1 = next(r for r in mesh.nodes[A1].membership.alive_records(mesh.now) if r.node_id == B2)
    assert b2_as_seen_by_a1.rtt_ms[A1] == pytest.approx(40.0, abs=0.5)


def test_one_slow_pong_never_makes_a_link_look_far():
    """A busy machine answers one ping late (its event loop stalled): the link's RTT stays what
    the link is, not the stall, so the planner does not drop a LAN member for it."""
    control = make_control(A1)
    control.link_up(0.0, 1, B2, dialled_by_us=True)
    pongs = [(1.0, 0.9995), (2.0, 1.9995), (2.4, 2.0)]  # two 0.5 ms pongs, then a 400 ms one
    for now, sent_at in pongs:
        control.message_received(now, 1, {"type": "pong", "t": sent_at})
        if now < 2.4:
            assert control.link_to(B2).rtt_ms is None  # too few samples to tell yet
    assert control.link_to(B2).rtt_ms == pytest.approx(0.5)
    for second in range(3, 3 + RTT_WINDOW):  # a link that really got slower shows it
        control.message_received(float(second), 1, {"type": "pong", "t": second - 0.1})
    assert control.link_to(B2).rtt_ms == pytest.approx(100.0)


def test_a_pong_from_the_future_or_of_the_wrong_type_is_ignored():
    control = make_control(A1)
    control.link_up(0.0, 1, B2, dialled_by_us=True)
    for stamp in [5.0, "0", True, None]:
        assert control.message_received(1.0, 1, {"type": "pong", "t": stamp}) == []
    assert control.link_to(B2).rtt_ms is None


# ---------------------------------------------------------------- removal


def test_a_removed_member_is_told_and_unlinked_and_stops_dialling():
    mesh = SimulatedLinks(THREE)
    mesh.link(B2, A1)
    mesh.link(C3, A1)
    mesh.run_until(mesh.fully_linked, limit=5.0)
    mesh.apply(A1, mesh.nodes[A1].remove(mesh.now, C3))
    assert mesh.run_until(lambda: mesh.nodes[C3].removed_from_mesh, limit=1.0) is not None
    assert any(node == C3 and isinstance(event, pc.RemovedFromMesh) for node, event in mesh.events)
    assert mesh.run_until(lambda: not mesh.linked(C3) and C3 not in mesh.linked(B2), limit=3.0) is not None
    dials_before = len(mesh.dials)
    mesh.run_for(10.0)
    assert not [dial for dial in mesh.dials[dials_before:] if dial[1] == C3]
    assert C3 not in mesh.alive(B2) and mesh.linked(A1) == {B2}


def test_a_refusal_saying_we_were_removed_takes_us_out_and_others_do_not():
    control = make_control(A1)
    assert control.dial_refused(0.0, PeerProtocolError("no", Fault.REFUSED)) == []
    outputs = control.dial_refused(0.0, PeerProtocolError("removed", Fault.REMOVED))
    assert any(isinstance(output, pc.RemovedFromMesh) for output in outputs)
    assert control.removed_from_mesh
    assert control.link_up(1.0, 7, B2, dialled_by_us=True) == [pc.CloseLink(7, "removed")]


# ---------------------------------------------------------------- the peer's faults, not ours


def test_a_peer_that_breaks_the_protocol_is_dropped_alone():
    mesh = SimulatedLinks(THREE)
    mesh.link(B2, A1)
    mesh.link(C3, A1)
    mesh.run_until(mesh.fully_linked, limit=5.0)
    end = mesh.nodes[A1].link_to(C3).link
    mesh.apply(A1, mesh.nodes[A1].message_received(mesh.now, end, {"type": "launch-missiles"}))
    assert [(node, error.fault) for node, error in mesh.protocol_errors] == [(A1, Fault.UNEXPECTED)]
    assert C3 not in mesh.linked(A1)
    mesh.link(A1, B2)  # a1 keeps working with the others
    assert mesh.run_until(lambda: mesh.linked(A1) >= {B2}, limit=1.0) is not None


def test_malformed_gossip_drops_the_link_with_a_typed_fault():
    control = make_control(A1)
    control.link_up(0.0, 1, B2, dialled_by_us=True)
    outputs = control.message_received(0.5, 1, {"type": "gossip", "v": 1, "records": "nope"})
    broke = [output for output in outputs if isinstance(output, pc.PeerBrokeProtocol)]
    assert broke and broke[0].peer_id == B2 and broke[0].error.fault is Fault.MALFORMED
    assert pc.CloseLink(1, "protocol error") in outputs and control.linked_peers() == []


# ---------------------------------------------------------------- leaving and saving


def test_a_leaving_node_is_dropped_by_its_peers_at_once():
    mesh = SimulatedLinks((A1, B2))
    mesh.link(A1, B2)
    mesh.run_for(2.0)
    mesh.apply(B2, mesh.nodes[B2].leave(mesh.now))
    assert mesh.run_until(lambda: B2 not in mesh.alive(A1), limit=0.5) is not None


def test_state_is_saved_and_the_own_record_refreshed_on_their_intervals():
    mesh = SimulatedLinks((A1,))
    mesh.run_for(20.0)
    saves = [event for node, event in mesh.events if isinstance(event, pc.SaveState)]
    refreshes = [event for node, event in mesh.events if isinstance(event, pc.RefreshOwnRecord)]
    expected = 20.0 / pc.SAVE_INTERVAL
    assert expected <= len(saves) <= expected + 1
    assert expected <= len(refreshes) <= expected + 1


def test_a_member_whose_first_addresses_are_unreachable_is_dialled_at_the_next_one():
    mesh = SimulatedLinks(THREE)
    unreachable = [("192.0.2.1", PORT), ("10.99.0.3", PORT)]  # a VPN, another LAN: not from here
    mesh.unreachable.update(unreachable)
    mesh.apply(C3, mesh.nodes[C3].update_own(mesh.now, {"addresses": (*unreachable, address_of(C3))}))
    mesh.link(B2, A1)
    mesh.link(C3, A1)
    assert mesh.run_until(lambda: C3 in mesh.linked(B2), limit=3 * DIAL_RETRY_SECONDS) is not None
    tried = [address for _, dialler, address in mesh.dials if dialler == B2]
    assert tried[:3] == [*unreachable, address_of(C3)]  # in the member's order, one at a time
