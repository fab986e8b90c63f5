"""Failure detection from direct links (core.link_watch with core.heartbeats), on the simulated
network of test_core_peer_control: a killed peer leaves every view in about LINK_SILENT_SECONDS
plus a heartbeat, while a slow or stalled peer, a stall of our own, or one broken link among
many never makes a living member dead. Manual clock, no sleeps."""

from __future__ import annotations

from meshdesk.core import link_watch
from meshdesk.core.heartbeats import UNRESPONSIVE_DEAD_AFTER
from tests.test_core_peer_control import A1, B2, C3, THREE, SimulatedLinks

DEAD_AFTER = 6.0  # make_control's: the relays-only bound


class Stallable:
    """A node whose loop can stop for a while: no timers, inputs held until it wakes."""

    def __init__(self, control, timer_first: bool = False):
        self.control = control
        self.timer_first = timer_first  # on waking, the timer runs before the held messages
        self.until: float | None = None
        self.held: list = []
        self.views: list[set[str]] = []  # whom it held alive after each of its timers

    def __getattr__(self, name):
        return getattr(self.control, name)

    def stall(self, now: float, seconds: float) -> None:
        self.until = now + seconds

    def _stalled(self, now: float) -> bool:
        return self.until is not None and now < self.until

    def next_deadline(self):
        return self.until if self.until is not None else self.control.next_deadline()

    def message_received(self, now, link, message):
        if self._stalled(now):
            self.held.append((link, message))
            return []
        return self.control.message_received(now, link, message)

    def handle_timer(self, now):
        if self._stalled(now):
            return []
        self.until, held, self.held = None, self.held, []
        outputs = self.timed(now) if self.timer_first else []
        for link, message in held:
            outputs += self.control.message_received(now, link, message)
        return outputs + ([] if self.timer_first else self.timed(now))

    def timed(self, now):
        outputs = self.control.handle_timer(now)
        self.views.append({record.node_id for record in self.control.membership.alive_records(now)})
        return outputs


def formed(nodes=THREE, **network) -> SimulatedLinks:
    mesh = SimulatedLinks(nodes, **network)
    for joiner in nodes[1:]:
        mesh.link(joiner, nodes[0])  # each joined through the first
    assert mesh.run_until(mesh.fully_linked, limit=10.0) is not None
    mesh.run_for(3.0)
    return mesh


def kill(mesh: SimulatedLinks, victim: str) -> None:
    """SIGKILL: the node stops, and nothing more arrives on its links or leaves them."""
    del mesh.nodes[victim]
    for end in [end for end, (owner, _) in mesh.ends.items() if owner == victim]:
        del mesh.ends[end]


def out_of_every_view(mesh: SimulatedLinks, victim: str):
    return lambda: all(victim not in mesh.alive(observer) for observer in mesh.nodes)


def test_a_killed_peer_leaves_every_view_once_its_links_are_silent():
    mesh = formed()
    kill(mesh, C3)
    took = mesh.run_until(out_of_every_view(mesh, C3), limit=DEAD_AFTER + 2)
    assert took is not None
    assert link_watch.LINK_SILENT_SECONDS <= took <= UNRESPONSIVE_DEAD_AFTER + 1.0 < DEAD_AFTER


def test_a_killed_peer_leaves_every_view_under_delay_and_loss():
    mesh = formed(seed=3, delay=0.05, jitter=0.1, loss=0.1)
    kill(mesh, B2)
    took = mesh.run_until(out_of_every_view(mesh, B2), limit=DEAD_AFTER + 2)
    assert took is not None and took <= UNRESPONSIVE_DEAD_AFTER + 1.5


def test_a_peer_whose_loop_stalls_for_three_seconds_stays_in_every_view():
    mesh = formed()
    mesh.nodes[C3] = stalled = Stallable(mesh.nodes[C3])
    for _ in range(3):
        stalled.stall(mesh.now, 3.0)
        assert mesh.run_until(lambda: C3 not in mesh.alive(A1) | mesh.alive(B2), limit=5.0) is None


def test_a_stall_of_our_own_is_not_evidence_against_our_peers():
    """Woken after 5 s, the timer runs before the messages that waited: the links look silent
    and the heartbeats old, but the silence is counted again from the wake-up."""
    mesh = formed()
    mesh.nodes[A1] = stalled = Stallable(mesh.nodes[A1], timer_first=True)
    stalled.stall(mesh.now, 5.0)
    mesh.run_for(10.0)
    assert stalled.views and all(view == set(THREE) for view in stalled.views)


def test_one_silent_link_among_many_kills_no_one_while_relays_still_hear_the_peer():
    mesh = formed()
    a_end = mesh.nodes[A1].link_to(C3).link
    c_end = mesh.nodes[C3].link_to(A1).link
    del mesh.ends[a_end], mesh.ends[c_end]  # both still hold the link; nothing crosses it
    assert mesh.run_until(lambda: C3 not in mesh.alive(A1) or A1 not in mesh.alive(C3),
                          limit=3 * DEAD_AFTER) is None


def test_a_slow_network_is_not_a_silent_one():
    mesh = formed(delay=1.5, jitter=0.5)
    assert mesh.run_until(lambda: any(mesh.alive(node) != set(THREE) for node in THREE), limit=20.0) is None


def test_without_a_link_a_peer_still_dies_by_relays_alone():
    """B2 holds no link to C3 (it was never dialled); only A1's relays tell B2 of C3."""
    mesh = SimulatedLinks(THREE)
    mesh.link(A1, B2)
    mesh.link(A1, C3)
    mesh.unreachable.add(("10.0.0.3", 9400))  # B2 cannot dial C3 (b2 < c3: B2 is the dialler)
    mesh.run_for(4.0)
    assert C3 in mesh.alive(B2) and mesh.nodes[B2].link_to(C3) is None
    kill(mesh, C3)
    took_a = mesh.run_until(lambda: C3 not in mesh.alive(A1), limit=DEAD_AFTER + 2)
    took_b = mesh.run_until(lambda: C3 not in mesh.alive(B2), limit=DEAD_AFTER + 2)
    assert took_a is not None and took_a <= UNRESPONSIVE_DEAD_AFTER + 1.0
    assert took_b is not None and took_a + took_b <= DEAD_AFTER + 1.5
