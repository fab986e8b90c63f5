"""Gossip membership, driven by a manual clock over an in-memory network that can lose,
duplicate, delay, reorder and partition messages. No real time, no sleeps."""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.core.errors import Fault, PeerProtocolError
from meshdesk.core.gossip_message import MAX_SET_SIZE, PROTOCOL_VERSION, GossipMessage
from meshdesk.core.gossip_values import MembershipError
from meshdesk.core.membership import Membership
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.node_record import MAX_RECORDS, ROLES, NodeRecord, signed
from tests.gossip_keys import ID, key, key_hex, sign_as, verify

SUSPECT_AFTER, DEAD_AFTER, INTERVAL = 3.0, 6.0, 1.0
FIVE = ("A", "B", "C", "D", "E")
FULL_MESH = [(a, b) for a, b in itertools.combinations(FIVE, 2)]
CHAIN = [("A", "B"), ("B", "C"), ("C", "D"), ("D", "E")]
A, B = ID["A"], ID["B"]  # node ids, for the tests that drive one node by hand


def make_record(label: str, generation: int = 0, **overrides) -> NodeRecord:
    """The record of node `label` (its id and key are the label's, `tests.gossip_keys`), signed."""
    fields = dict(
        node_id=ID[label],
        name=f"node {label}",
        addresses=(("10.0.0.1", 9400),),
        capacity_bytes=8 * 2**30,
        models=(ModelAdvert("x.gguf", 123, "sha256:ab12"),),
        serving=None,
        role="worker",
        versions={"app": "0.1.0", "protocol": 1, "rpc": 3},
        rtt_ms={},
        public_key=key_hex(label),
        generation=generation,
    )
    return signed(NodeRecord(**{**fields, **overrides}), sign_as(label))


def make_membership(label: str, generation: int = 0, founder: str | None = "A", **overrides) -> Membership:
    """Node `label` of a mesh that `founder` founded."""
    return Membership(
        make_record(label, generation, **overrides),
        sign=sign_as(label),
        verify=verify,
        authority_key=None if founder is None else key_hex(founder),
        suspect_after=SUSPECT_AFTER,
        dead_after=DEAD_AFTER,
        heartbeat_interval=INTERVAL,
    )


# ---------------------------------------------------------------- the simulated network


class SimulatedMesh:
    """Membership objects on one manual clock, linked by a fake network.

    The random generator lives here, in the test, seeded: runs are repeatable.
    """

    def __init__(self, node_ids, links, *, seed=0, delay=0.02, jitter=0.0, loss=0.0, duplicate=0.0):
        self.now = 0.0
        self.random = random.Random(seed)
        self.delay, self.jitter, self.loss, self.duplicate = delay, jitter, loss, duplicate
        self.nodes: dict[str, Membership] = {}
        self.stopped: set[str] = set()
        self.partition: list[set[str]] | None = None
        self.in_flight: list = []
        self.sequence = itertools.count()
        self.deaths: list[tuple[float, str, str]] = []  # (time, observer, node that died)
        for index, node_id in enumerate(node_ids):
            self.start(node_id, generation=100 + index)
        for a, b in links:
            self.connect(a, b)

    # ---- topology and faults

    def start(self, node_id, generation=0, **overrides):
        self.nodes[node_id] = make_membership(node_id, generation, **overrides)
        self.stopped.discard(node_id)

    def connect(self, a, b):
        self.nodes[a].peer_connected(self.now, ID[b])
        self.nodes[b].peer_connected(self.now, ID[a])

    def disconnect(self, a, b):
        self.nodes[a].peer_disconnected(self.now, ID[b])
        self.nodes[b].peer_disconnected(self.now, ID[a])

    def kill(self, node_id):
        """SIGKILL: the node neither ticks nor sends, and what was in flight is lost."""
        self.stopped.add(node_id)
        self.in_flight = [item for item in self.in_flight if node_id not in (item[2], item[3])]
        heapq.heapify(self.in_flight)

    def split(self, *groups):
        self.partition = [set(group) for group in groups]

    def heal(self):
        self.partition = None

    def running(self) -> list[str]:
        return [node_id for node_id in self.nodes if node_id not in self.stopped]

    def can_talk(self, a, b) -> bool:
        if a in self.stopped or b in self.stopped:
            return False
        return self.partition is None or any(a in group and b in group for group in self.partition)

    # ---- running

    def run_for(self, seconds, check=lambda: None):
        self.run_until(lambda: check() and False, seconds)

    def run_until(self, condition, limit) -> float | None:
        """Runs until `condition()` holds; returns the simulated seconds it took, or None."""
        start, end = self.now, self.now + limit
        steps_without_progress = 0
        while not condition():
            next_time = self._next_event_time()
            if next_time is None or next_time > end:
                self.now = end
                return limit if condition() else None
            steps_without_progress = steps_without_progress + 1 if next_time <= self.now else 0
            assert steps_without_progress < 1000, "the simulation does not advance: a deadline stays in the past"
            self.now = max(self.now, next_time)
            self._deliver_due()
            self._tick_nodes()
        return self.now - start

    def _next_event_time(self) -> float | None:
        times = [self.in_flight[0][0]] if self.in_flight else []
        times += [self.nodes[n].next_deadline() for n in self.running() if self.nodes[n].next_deadline() is not None]
        return min(times, default=None)

    def _deliver_due(self):
        while self.in_flight and self.in_flight[0][0] <= self.now:
            _, _, sender, recipient, text = heapq.heappop(self.in_flight)
            if self.can_talk(sender, recipient):
                self.nodes[recipient].receive(self.now, ID[sender], json.loads(text))

    def _tick_nodes(self):
        for node_id in self.running():
            node = self.nodes[node_id]
            self.deaths += [(self.now, node_id, ID.label(dead)) for dead in node.expire(self.now)]
            for peer_id, message in node.messages_to_send(self.now):
                self._transmit(node_id, ID.label(peer_id), message)

    def _transmit(self, sender, recipient, message):
        if not self.can_talk(sender, recipient) or self.random.random() < self.loss:
            return
        copies = 2 if self.random.random() < self.duplicate else 1
        text = json.dumps(message)  # the wire is JSON; this also proves the message encodes
        for _ in range(copies):
            arrival = self.now + self.delay + self.random.uniform(0, self.jitter)
            heapq.heappush(self.in_flight, (arrival, next(self.sequence), sender, recipient, text))

    # ---- views

    def view(self, observer) -> dict[str, int]:
        """label -> generation of the nodes `observer` holds alive."""
        return {ID.label(r.node_id): r.generation for r in self.nodes[observer].alive_records(self.now)}

    def state(self, observer, label) -> str | None:
        return self.nodes[observer].peer_states(self.now).get(ID[label], {}).get("state")

    def states(self, observer) -> dict[str, dict]:
        """label -> state and silence, as `observer` holds them."""
        return {ID.label(node_id): state for node_id, state in self.nodes[observer].peer_states(self.now).items()}

    def removed(self, observer) -> set[str]:
        return {ID.label(node_id) for node_id in self.nodes[observer].removed_node_ids}

    def converged(self) -> bool:
        expected = {node_id: self.nodes[node_id].own.generation for node_id in self.running()}
        return all(self.view(observer) == expected for observer in self.running())

    def observers_seeing(self, node_id, observers) -> set[str]:
        return {observer for observer in observers if node_id in self.view(observer)}

    def everyone_sees(self, node_id, states, observers=None) -> bool:
        observers = observers or [o for o in self.running() if o != node_id]
        return all(self.state(observer, node_id) in states for observer in observers)


# ---------------------------------------------------------------- convergence


def test_five_nodes_converge_within_five_seconds_on_a_lossless_full_mesh():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    assert mesh.run_until(mesh.converged, limit=5.0) is not None
    mesh.run_for(2.0)
    mesh.nodes["B"].update_own(mesh.now, serving="x.gguf", role="host")
    mesh.nodes["D"].update_own(mesh.now, capacity_bytes=1)
    assert not mesh.converged()
    assert mesh.run_until(mesh.converged, limit=5.0) < 0.1  # local changes go out at once
    assert {record.serving for record in mesh.nodes["E"].alive_records(mesh.now)} == {None, "x.gguf"}


@pytest.mark.parametrize("seed", range(5))
def test_converges_under_loss_duplication_and_reordering(seed):
    mesh = SimulatedMesh(FIVE, FULL_MESH, seed=seed, delay=0.02, jitter=0.4, loss=0.2, duplicate=0.2)
    assert mesh.run_until(mesh.converged, limit=5.0) is not None
    for index, node_id in enumerate(FIVE):
        mesh.run_for(0.3)
        mesh.nodes[node_id].update_own(mesh.now, name=f"renamed {index}")
    assert mesh.run_until(mesh.converged, limit=5.0) is not None
    mesh.run_for(60.0)
    assert mesh.deaths == []  # nobody alive was ever declared dead
    assert mesh.converged()


def test_a_chain_spreads_records_and_liveness_to_nodes_not_directly_connected():
    mesh = SimulatedMesh(FIVE, CHAIN)
    assert mesh.run_until(mesh.converged, limit=5.0) is not None
    # A new node's record travels at the pace of its heartbeats, so the far end is never even
    # suspected while the relayed heartbeats catch up.
    states_at_the_ends = set()
    mesh.run_for(30.0, check=lambda: states_at_the_ends.update({mesh.state("A", "E"), mesh.state("E", "A")}))
    assert states_at_the_ends == {"alive"}
    mesh.nodes["E"].update_own(mesh.now, name="E, renamed")
    assert mesh.run_until(mesh.converged, limit=1.0) is not None  # news is forwarded hop by hop at once


@pytest.mark.parametrize("seed", range(5))
def test_a_lossy_chain_converges(seed):
    mesh = SimulatedMesh(FIVE, CHAIN, seed=seed, jitter=0.4, loss=0.2, duplicate=0.2)
    assert mesh.run_until(mesh.converged, limit=10.0) is not None  # at most 7.5 s over 60 seeds


@pytest.mark.parametrize("seed", range(3))
def test_a_chain_with_some_loss_declares_nobody_dead(seed):
    # Each link of a chain is the only path: at 20 % loss, five lost rounds in a row on one
    # link do happen within a minute. (The real transport, QUIC, retransmits.)
    mesh = SimulatedMesh(FIVE, CHAIN, seed=seed, jitter=0.4, loss=0.05, duplicate=0.2)
    mesh.run_for(60.0)
    assert mesh.deaths == [] and mesh.converged()


def test_periodic_gossip_carries_only_records_the_peer_lacks():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_until(mesh.converged, limit=5.0)
    mesh.run_for(3.0)
    node = mesh.nodes["A"]
    node.expire(mesh.now + INTERVAL)
    messages = node.messages_to_send(mesh.now + INTERVAL)
    assert sorted(ID.label(peer) for peer, _ in messages) == ["B", "C", "D", "E"]
    assert all(message["records"] == [] and message["entries"] == [] for _, message in messages)
    assert all(set(message["heartbeats"]) == {ID[label] for label in FIVE} for _, message in messages)


# ---------------------------------------------------------------- failure detection


def test_a_killed_node_is_dead_everywhere_within_ten_seconds():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_for(10.0)
    killed_at = mesh.now
    mesh.kill("C")
    assert mesh.run_until(lambda: mesh.everyone_sees("C", {"dead"}), limit=10.0) is not None
    deaths = [(observer, time - killed_at) for time, observer, dead in mesh.deaths if dead == "C"]
    assert sorted(observer for observer, _ in deaths) == ["A", "B", "D", "E"]  # each reported once
    # The last heartbeat left C at most one interval before the kill; dead comes dead_after later.
    assert all(DEAD_AFTER - INTERVAL < delay <= DEAD_AFTER + 0.1 for _, delay in deaths)
    seen_alive_again = set()
    mesh.run_for(10 * DEAD_AFTER + 5.0, check=lambda: seen_alive_again.update(mesh.observers_seeing("C", "ABDE")))
    assert seen_alive_again == set() and len(mesh.deaths) == 4
    assert all("C" not in mesh.states(o) for o in "ABDE")  # forgotten, for good
    assert mesh.view("A") == {"A": 100, "B": 101, "D": 103, "E": 104}


def test_a_killed_node_at_the_end_of_a_chain_is_dead_everywhere_within_ten_seconds():
    mesh = SimulatedMesh(FIVE, CHAIN)
    mesh.run_for(10.0)
    mesh.kill("E")
    assert mesh.run_until(lambda: mesh.everyone_sees("E", {"dead"}), limit=10.0) is not None


@pytest.mark.parametrize("seed", range(3))
def test_a_dead_node_is_forgotten_for_good(seed):
    # Along a chain with jitter each hop forgets E at a different time; none may hand it back.
    mesh = SimulatedMesh(FIVE, CHAIN, seed=seed, jitter=0.5)
    mesh.run_for(10.0)
    mesh.kill("E")
    mesh.run_for(DEAD_AFTER + 4 * 1.5 * INTERVAL)
    assert mesh.everyone_sees("E", {"dead"})
    seen_alive_again = set()
    mesh.run_for(10 * DEAD_AFTER + 10.0, check=lambda: seen_alive_again.update(mesh.observers_seeing("E", "ABCD")))
    assert seen_alive_again == set() and len(mesh.deaths) == 4
    assert all("E" not in mesh.states(o) for o in "ABCD")


def test_a_killed_middle_node_splits_a_chain_into_two_views():
    mesh = SimulatedMesh(FIVE, CHAIN)
    mesh.run_for(10.0)
    mesh.kill("C")
    assert mesh.run_until(lambda: set(mesh.view("A")) == {"A", "B"} and set(mesh.view("E")) == {"D", "E"}, limit=10.0)
    assert set(mesh.view("B")) == {"A", "B"} and set(mesh.view("D")) == {"D", "E"}


def test_a_normal_disconnect_is_not_a_death():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_for(5.0)
    mesh.disconnect("A", "B")
    states = set()
    mesh.run_for(30.0, check=lambda: states.update({mesh.state("A", "B"), mesh.state("B", "A")}))
    assert states == {"alive"}
    assert mesh.deaths == []


def test_a_partition_makes_each_side_see_the_other_dead_and_healing_revives_them():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_for(5.0)
    mesh.split({"A", "B"}, {"C", "D", "E"})

    def sides_see_each_other_dead():
        return all(set(mesh.view(node_id)) == side for side in ({"A", "B"}, {"C", "D", "E"}) for node_id in side)

    assert mesh.run_until(sides_see_each_other_dead, limit=10.0) is not None
    assert mesh.state("A", "C") == "dead" and mesh.state("E", "B") == "dead"
    mesh.nodes["A"].update_own(mesh.now, name="A, changed during the split")
    mesh.run_for(5.0)
    mesh.heal()
    assert mesh.run_until(mesh.converged, limit=2 * INTERVAL) is not None
    assert mesh.nodes["D"].own.name == "node D"
    assert {record.name for record in mesh.nodes["D"].alive_records(mesh.now)} >= {"A, changed during the split"}


def test_a_partition_longer_than_the_forgetting_time_heals_too():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_for(5.0)
    mesh.split({"A", "B"}, {"C", "D", "E"})
    mesh.run_for(10 * DEAD_AFTER + 10.0)
    assert "C" not in mesh.states("A")  # forgotten
    mesh.heal()
    assert mesh.run_until(mesh.converged, limit=3 * INTERVAL) is not None


def test_a_restarted_node_with_the_same_id_wins_over_its_old_record():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_for(10.0)
    old_generation = mesh.nodes["A"].own.generation
    mesh.kill("A")
    mesh.run_for(1.0)
    mesh.start("A", generation=0, name="A, restarted")  # starts from 0, below its old record
    for peer in "BCDE":
        mesh.connect("A", peer)
    assert mesh.run_until(mesh.converged, limit=3.0) is not None
    assert mesh.nodes["A"].own.generation > old_generation
    assert all(mesh.states(o)["A"]["state"] == "alive" for o in "BCDE")
    states = set()
    mesh.run_for(30.0, check=lambda: states.update(mesh.state(o, "A") for o in "BCDE"))
    assert states == {"alive"}  # its heartbeat continued above what the mesh had heard


def test_a_node_restarted_after_it_was_declared_dead_comes_back():
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_for(10.0)
    mesh.kill("A")
    mesh.run_for(20.0)
    assert mesh.everyone_sees("A", {"dead"})
    mesh.start("A", generation=0, name="A, back")
    for peer in "BCDE":
        mesh.connect("A", peer)
    assert mesh.run_until(mesh.converged, limit=3.0) is not None
    mesh.run_for(30.0)
    assert mesh.everyone_sees("A", {"alive"})


# ---------------------------------------------------------------- leave, remove, revoke


@pytest.mark.parametrize("links", [FULL_MESH, CHAIN], ids=["full mesh", "chain"])
def test_a_leaving_node_is_gone_from_every_view_within_one_gossip_round(links):
    mesh = SimulatedMesh(FIVE, links)
    mesh.run_for(5.0)
    mesh.nodes["A"].leave(mesh.now)
    assert "A" not in mesh.view("A")
    assert mesh.run_until(lambda: all("A" not in mesh.view(o) for o in "BCDE"), limit=INTERVAL) is not None
    mesh.kill("A")
    assert mesh.everyone_sees("A", {"left"})
    mesh.run_for(10 * DEAD_AFTER + 5.0)
    assert mesh.deaths == []  # leaving is not dying
    assert all("A" not in mesh.states(o) for o in "BCDE")  # forgotten in the end


def test_removal_spreads_and_is_permanent():
    mesh = SimulatedMesh([*FIVE, "F"], FULL_MESH)
    mesh.nodes["A"].grant_admin(mesh.now, key("E").public_bytes)  # what E decides later must not count
    mesh.run_for(5.0)
    mesh.nodes["A"].remove(mesh.now, ID["E"])
    others = ["A", "B", "C", "D"]
    assert mesh.run_until(lambda: all("E" not in mesh.view(o) for o in others), limit=INTERVAL) is not None
    assert all(mesh.removed(o) == {"E"} for o in others)
    assert mesh.everyone_sees("E", {"removed"}, observers=others)
    # E keeps running and talking: nothing it says counts any more.
    mesh.nodes["E"].update_own(mesh.now, name="E, trying again")
    mesh.nodes["E"].revoke_token(mesh.now, "token-revoked-by-e")
    mesh.connect("F", "B")  # a newcomer learns the removal too
    seen_alive = set()
    mesh.run_for(10 * DEAD_AFTER + 10.0, check=lambda: seen_alive.update(mesh.observers_seeing("E", [*others, "F"])))
    assert seen_alive == set()
    assert mesh.removed("F") == {"E"}
    assert all("token-revoked-by-e" not in mesh.nodes[o].revoked_token_ids for o in [*others, "F"])
    with pytest.raises(ValueError):
        mesh.nodes["A"].remove(mesh.now, ID["A"])


@pytest.mark.parametrize("links", [FULL_MESH, CHAIN], ids=["full mesh", "chain"])
def test_revocations_spread(links):
    mesh = SimulatedMesh(FIVE, links)
    mesh.run_for(3.0)
    mesh.nodes["A"].grant_admin(mesh.now, key("E").public_bytes)  # A founded the mesh
    mesh.run_for(3.0)  # the grant reaches E along the chain too
    mesh.nodes["A"].revoke_token(mesh.now, "token-1")
    mesh.nodes["E"].revoke_token(mesh.now, "token-2")
    def everyone_has_both():
        return all(node.revoked_token_ids == {"token-1", "token-2"} for node in mesh.nodes.values())

    assert mesh.run_until(everyone_has_both, limit=INTERVAL) is not None


# ---------------------------------------------------------------- own id, timing (one node by hand)


def gossip_from(sender: Membership, to: str, now: float = 0.0) -> dict:
    sender.peer_connected(now, to)
    return dict(sender.messages_to_send(now))[to]


def test_a_rival_record_for_our_own_id_makes_us_bump_our_generation():
    node = make_membership("A", generation=5)
    node.peer_connected(0.0, B)
    rival = GossipMessage((make_record("A", 9, name="impostor"),), {}, {})
    node.receive(0.0, B, rival.to_wire())
    assert node.own.generation == 10 and node.own.name == "node A"
    assert node.own_id_conflicts == 1
    echo = GossipMessage((node.own,), {}, {A: 10})
    node.receive(0.1, B, echo.to_wire())  # our own record coming back is no rival
    assert node.own.generation == 10 and node.own_id_conflicts == 1
    same_generation = GossipMessage((make_record("A", 10, name="twin"),), {}, {})
    node.receive(0.2, B, same_generation.to_wire())
    assert node.own.generation == 11
    digest_only = GossipMessage((), {A: 50}, {A: 20})
    node.receive(0.3, B, digest_only.to_wire())
    assert node.own.generation == 11  # an unsigned claim moves nothing; a restart's old record would
    sent = dict(node.messages_to_send(0.3))[B]
    assert sent["generations"][A] == 11
    assert sent["heartbeats"][A] == 51  # continues above the heartbeat the mesh last heard


def test_heartbeats_count_once_per_interval_and_local_changes_go_out_at_once():
    node = make_membership("A")
    assert node.next_deadline() is None
    assert node.messages_to_send(10.0) == []  # nobody to talk to yet
    assert node.next_deadline() == 11.0
    node.peer_connected(10.2, B)
    assert node.next_deadline() == 10.2
    [(peer, first)] = node.messages_to_send(10.2)
    assert peer == B and first["heartbeats"] == {A: 1} and [r["node_id"] for r in first["records"]] == [A]
    assert node.messages_to_send(10.9) == []
    [(_, second)] = node.messages_to_send(11.0)
    assert second["heartbeats"] == {A: 2} and second["records"] == []
    node.update_own(11.4, serving="x.gguf")
    assert node.next_deadline() == 11.4
    [(_, third)] = node.messages_to_send(11.4)
    assert third["records"][0]["serving"] == "x.gguf" and third["records"][0]["generation"] == 1
    assert node.next_deadline() == 12.0
    assert node.messages_to_send(15.5)  # late: one round, not a burst of catch-up rounds
    assert node.next_deadline() == 16.5


def test_a_lost_record_is_sent_again_after_the_peer_digest_shows_it_missing():
    a, b = make_membership("A"), make_membership("B")
    lost = gossip_from(a, B)
    assert lost["records"]
    b_message = gossip_from(b, A)  # b never got a's record: its digest says so
    a.receive(0.1, B, b_message)
    assert a.next_deadline() == 0.1  # answered at once, not a round later
    [(_, resent)] = a.messages_to_send(0.1)
    assert [record["node_id"] for record in resent["records"]] == [A]
    a.receive(0.2, B, b_message)  # a duplicate of the old digest: sent once more, harmlessly
    assert a.messages_to_send(0.2)[0][1]["records"]
    b.receive(0.3, A, resent)
    a.receive(0.4, B, dict(b.messages_to_send(1.0))[A])
    assert a.messages_to_send(0.4) == [] and dict(a.messages_to_send(1.0))[B]["records"] == []


def test_liveness_times_are_exact():
    a, b = make_membership("A"), make_membership("B")
    a.receive(0.0, B, gossip_from(b, A))
    assert a.peer_states(2.9)[B] == {"state": "alive", "last_seen_s": 2.9}
    assert a.peer_states(3.0)[B]["state"] == "suspect"
    assert [r.node_id for r in a.alive_records(5.9)] == sorted([A, B])
    assert a.next_deadline() == 0.0  # our first round is due
    a.messages_to_send(0.0)
    assert a.next_deadline() == 1.0
    assert a.expire(5.99) == []
    assert a.expire(6.0) == [B] and a.expire(7.0) == []
    assert a.peer_states(6.0)[B]["state"] == "dead" and [r.node_id for r in a.alive_records(6.0)] == [A]
    b.messages_to_send(1.0)
    [(_, later)] = b.messages_to_send(10.0)  # heartbeat 2 or more: B is back
    a.receive(10.0, B, later)
    assert a.peer_states(10.0)[B]["state"] == "alive"
    assert a.expire(15.99) == [] and a.expire(16.0) == [B]  # reported again after dying again
    a.expire(10.0 + 10 * DEAD_AFTER)
    assert B not in a.peer_states(70.0)


def test_update_own_refuses_identity_changes_and_ignores_non_changes():
    node = make_membership("A", generation=3)
    for change in ({"node_id": "Z"}, {"generation": 9}, {"leaving": True}, {"colour": "red"}):
        with pytest.raises(ValueError):
            node.update_own(0.0, **change)
    node.update_own(0.0, name="node A")
    assert node.own.generation == 3
    with pytest.raises(MembershipError):
        node.update_own(0.0, role="king")
    assert node.own == make_record("A", 3)


def test_public_surface():
    public = {name for name in dir(Membership) if not name.startswith("_")}
    assert public == {
        "update_own", "receive", "peer_connected", "peer_disconnected", "peer_unresponsive", "remove", "revoke_token", "leave",
        "messages_to_send", "next_deadline", "expire", "alive_records", "peer_states",
        "removed_node_ids", "revoked_token_ids", "own", "grant_admin", "restore_entries", "authority",
        "wants", "want", "drop_model", "restore_wants",
    }  # fmt: skip
    assert [name for name in vars(make_membership("A")) if not name.startswith("_")] == [
        "own_id_conflicts", "refused_records"]


# ---------------------------------------------------------------- records on the wire

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
node_ids = st.text(min_size=1, max_size=64)
adverts = st.builds(
    ModelAdvert,
    name=st.text(min_size=1, max_size=30),
    size=st.integers(0, 2**63 - 1),
    digest=st.text(min_size=1, max_size=70),
    layers=st.none() | st.integers(0, 1000),
    wanted=st.booleans(),
    split=st.booleans(),
    tensor_split=st.none() | st.lists(st.floats(0, 1e6), min_size=1, max_size=4).map(tuple),
)
records = st.builds(
    NodeRecord,
    node_id=node_ids,
    name=st.text(max_size=40),
    addresses=st.lists(st.tuples(st.text(min_size=1, max_size=30), st.integers(1, 65535)), max_size=4).map(tuple),
    capacity_bytes=st.integers(0, 2**63 - 1),
    models=st.lists(adverts, max_size=4).map(tuple),
    serving=st.none() | st.text(min_size=1, max_size=30),
    role=st.sampled_from(ROLES),
    versions=st.dictionaries(st.text(max_size=10), json_scalars | st.lists(json_scalars, max_size=3), max_size=4),
    rtt_ms=st.dictionaries(node_ids, st.floats(0, 1e6)),
    public_key=st.text(max_size=80),
    generation=st.integers(0, 2**63 - 1),
    leaving=st.booleans(),
)


@given(records)
def test_records_round_trip_through_json(record):
    assert NodeRecord.from_wire(json.loads(json.dumps(record.to_wire()))) == record


def test_a_record_is_normalised_and_owns_its_data():
    models = [ModelAdvert("x.gguf", 5, "d", wanted=True, tensor_split=[1, 2])]
    versions = {"app": "1", "tags": ("a", "b")}
    record = make_record("A", addresses=[["h", 1]], models=models, rtt_ms={"B": 12}, versions=versions)
    assert record.addresses == (("h", 1),) and record.rtt_ms == {"B": 12.0}
    assert record.models == (ModelAdvert("x.gguf", 5, "d", wanted=True, tensor_split=(1.0, 2.0)),)
    assert record.versions == {"app": "1", "tags": ["a", "b"]}
    models.clear()
    versions["app"] = "changed"
    assert len(record.models) == 1 and record.versions["app"] == "1"
    wire = record.to_wire()
    wire["models"][0]["name"] = "changed again"
    wire["versions"]["tags"].append("c")
    assert record.models[0].name == "x.gguf" and record.versions["tags"] == ["a", "b"]


def test_a_record_holds_model_adverts_not_dicts():
    with pytest.raises(MembershipError, match="models must hold model adverts"):
        make_record("A", models=({"name": "x.gguf", "size": 1, "digest": "d"},))


def test_malformed_gossip_is_the_peers_fault():
    with pytest.raises(PeerProtocolError) as caught:
        GossipMessage.from_wire({"type": "gossip"})
    assert isinstance(caught.value, MembershipError) and caught.value.fault is Fault.MALFORMED


# ---------------------------------------------------------------- malformed input


def busy_membership() -> Membership:
    """Node A of a converged five-node mesh: real state that malformed input must not touch."""
    mesh = SimulatedMesh(FIVE, FULL_MESH)
    mesh.run_for(5.0)
    mesh.nodes["A"].grant_admin(mesh.now, key("B").public_bytes)
    mesh.run_for(1.0)
    mesh.nodes["B"].remove(mesh.now, ID["E"])
    mesh.nodes["B"].revoke_token(mesh.now, "token-1")
    mesh.nodes["C"].want(mesh.now, "sha256:ab12")
    mesh.run_for(1.0)
    mesh.nodes["D"].drop_model(mesh.now, "sha256:ab12")
    mesh.run_for(1.0)
    assert not mesh.nodes["A"].wants.get("sha256:ab12").wanted
    return mesh.nodes["A"]


@pytest.fixture(scope="module")
def busy():
    return busy_membership()


def valid_message() -> dict:
    sender = make_membership("B", 10**6)  # newer than the B the busy node holds
    sender.want(0.0, "sha256:ab12")  # and a want newer than the busy node's drop
    return gossip_from(sender, A)


def with_want_changes(**changes):
    return lambda message: {**message, "wants": [{**message["wants"][0], **changes}]}


def with_changes(**changes):
    return lambda message: {**message, **changes}


def advert_wire(without: str | None = None, **changes) -> dict:
    fields = {"name": "x.gguf", "size": 1, "digest": "d", "layers": 2, **changes}
    return {key: value for key, value in fields.items() if key != without}


def with_record_changes(**changes):
    return lambda message: {**message, "records": [{**message["records"][0], **changes}]}


def without(key):
    return lambda message: {k: v for k, v in message.items() if k != key}


def entry_wire(**changes) -> dict:
    return {"kind": "remove", "subject": ID["E"], "by": key_hex("A"), "at": 1, "signature": "00" * 64, **changes}


def nested(depth):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_MESSAGES = {
    "not an object": lambda message: ["gossip"],
    "null": lambda message: None,
    "missing records": without("records"),
    "missing type": without("type"),
    "unknown field": with_changes(extra=1),
    "unknown field with a newline": with_changes(**{"bad\nkey": 1}),
    "wrong type": with_changes(type="ping"),
    "unhashable type": with_changes(type=["gossip"]),
    "future version": with_changes(v=PROTOCOL_VERSION + 1),
    "older version": with_changes(v=2),
    "version as bool": with_changes(v=True),
    "version as text": with_changes(v="1"),
    "records not a list": with_changes(records={}),
    "record not an object": with_changes(records=[1]),
    "too many records": lambda message: {**message, "records": message["records"] * (MAX_RECORDS + 1)},
    "repeated record": lambda message: {**message, "records": message["records"] * 2},
    "record missing a field": lambda message: {**message, "records": [without("role")(message["records"][0])]},
    "record with an unknown field": with_record_changes(colour="red"),
    "empty node id": with_record_changes(node_id=""),
    "long node id": with_record_changes(node_id="x" * 65),
    "numeric node id": with_record_changes(node_id=7),
    "negative generation": with_record_changes(generation=-1),
    "huge generation": with_record_changes(generation=2**63),
    "fractional generation": with_record_changes(generation=1.5),
    "bool generation": with_record_changes(generation=True),
    "unknown role": with_record_changes(role="king"),
    "missing role": with_record_changes(role=None),
    "port zero": with_record_changes(addresses=[["h", 0]]),
    "port too big": with_record_changes(addresses=[["h", 70000]]),
    "address without port": with_record_changes(addresses=[["h"]]),
    "address as text": with_record_changes(addresses="h:1"),
    "empty host": with_record_changes(addresses=[["", 1]]),
    "bool port": with_record_changes(addresses=[["h", True]]),
    "too many addresses": with_record_changes(addresses=[["h", 1]] * 17),
    "negative capacity": with_record_changes(capacity_bytes=-1),
    "capacity as text": with_record_changes(capacity_bytes="1"),
    "model not an object": with_record_changes(models=[1]),
    "models not a list": with_record_changes(models={"name": "x"}),
    "model with a nan size": with_record_changes(models=[advert_wire(size=float("nan"))]),
    "model without a digest": with_record_changes(models=[advert_wire(without="digest")]),
    "model with an empty name": with_record_changes(models=[advert_wire(name="")]),
    "model with a negative size": with_record_changes(models=[advert_wire(size=-1)]),
    "model with a bool size": with_record_changes(models=[advert_wire(size=True)]),
    "model with text layers": with_record_changes(models=[advert_wire(layers="18")]),
    "model wanted as text": with_record_changes(models=[advert_wire(wanted="yes")]),
    "model split as null": with_record_changes(models=[advert_wire(split=None)]),
    "model ratios negative": with_record_changes(models=[advert_wire(tensor_split=[1, -1])]),
    "model ratios infinite": with_record_changes(models=[advert_wire(tensor_split=[float("inf")])]),
    "model ratios too many": with_record_changes(models=[advert_wire(tensor_split=list(range(5000)))]),
    "model ratios a set": with_record_changes(models=[advert_wire(tensor_split={1.0})]),
    "model with a long digest": with_record_changes(models=[advert_wire(digest="d" * 129)]),
    "model with too many fields": with_record_changes(models=[advert_wire(**{f"f{i}": 1 for i in range(40)})]),
    "too many models": with_record_changes(models=[advert_wire()] * 257),
    "versions not an object": with_record_changes(versions=[]),
    "versions nested too deeply": with_record_changes(versions={"deep": nested(20)}),
    "versions too large": with_record_changes(versions={"list": list(range(5000))}),
    "versions holding a set": with_record_changes(versions={"tags": {"a"}}),
    "versions with nan": with_record_changes(versions={"n": float("nan")}),
    "versions with a numeric key": with_record_changes(versions={1: 2}),
    "negative rtt": with_record_changes(rtt_ms={"C": -1}),
    "rtt as text": with_record_changes(rtt_ms={"C": "fast"}),
    "infinite rtt": with_record_changes(rtt_ms={"C": float("inf")}),
    "rtt for an empty id": with_record_changes(rtt_ms={"": 1.0}),
    "public key missing": with_record_changes(public_key=None),
    "serving a number": with_record_changes(serving=5),
    "serving empty": with_record_changes(serving=""),
    "leaving as text": with_record_changes(leaving="yes"),
    "leaving as int": with_record_changes(leaving=0),
    "long name": with_record_changes(name="x" * 300),
    "heartbeats a list": with_changes(heartbeats=[]),
    "negative heartbeat": with_changes(heartbeats={"B": -1}),
    "fractional heartbeat": with_changes(heartbeats={"B": 1.0}),
    "null heartbeat": with_changes(heartbeats={"B": None}),
    "heartbeat for a long id": with_changes(heartbeats={"x" * 65: 1}),
    "bool generation in digest": with_changes(generations={"B": True}),
    "too many heartbeats": with_changes(heartbeats={f"n{i}": 1 for i in range(MAX_RECORDS + 1)}),
    "entries as text": with_changes(entries="abc"),
    "entry a number": with_changes(entries=[1]),
    "entry of no kind": with_changes(entries=[entry_wire(kind="ban")]),
    "entry with an empty subject": with_changes(entries=[entry_wire(subject="")]),
    "entry removing a long id": with_changes(entries=[entry_wire(subject="x" * 65)]),
    "entry revoking a long id": with_changes(entries=[entry_wire(kind="revoke", subject="x" * 129)]),
    "entry without a signer": with_changes(entries=[entry_wire(by=None)]),
    "entry at a negative time": with_changes(entries=[entry_wire(at=-1)]),
    "entry with an unknown field": with_changes(entries=[entry_wire(colour="red")]),
    "too many entries": with_changes(entries=[entry_wire(subject=f"n{i}") for i in range(MAX_SET_SIZE + 1)]),
    "entries null": with_changes(entries=None),
    "wants missing": without("wants"),
    "wants as text": with_changes(wants="abc"),
    "want a number": with_changes(wants=[1]),
    "want without an advert": with_want_changes(advert=None),
    "want with a bad advert": with_want_changes(advert=advert_wire(size=-1)),
    "want wanted as text": with_want_changes(wanted="yes"),
    "want counter negative": with_want_changes(counter=-1),
    "want counter huge": with_want_changes(counter=2**63),
    "want counter a float": with_want_changes(counter=1.5),
    "want by a long author": with_want_changes(author="x" * 65),
    "want by no author": with_want_changes(author=""),
    "want with an unknown field": with_want_changes(colour="red"),
    "wants repeating a digest": lambda message: {**message, "wants": message["wants"] * 2},
    "too many wants": lambda message: {**message, "wants": [
        {**message["wants"][0], "advert": advert_wire(digest=f"d{i}")} for i in range(129)]},
    "authority a number": with_changes(authority=7),
    "authority too long": with_changes(authority="ab" * 33),
    "record with a foreign key": with_record_changes(public_key=key_hex("C")),
    "record with a changed name": with_record_changes(name="forged"),
    "record with a forged generation": with_record_changes(generation=2**63 - 1),
    "record unsigned": with_record_changes(signature=""),
    "record signed in capitals": lambda message: with_record_changes(
        signature=message["records"][0]["signature"].upper())(message),
}


@pytest.mark.parametrize("make_bad", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_malformed_messages_are_refused_and_change_nothing(busy, make_bad):
    assert_refused(busy, make_bad(valid_message()))


@pytest.mark.parametrize("sender", ["", 7, "x" * 65, A])
def test_a_bad_sender_id_is_refused(busy, sender):
    assert_refused(busy, valid_message(), sender=sender)


def state_of(membership: Membership) -> dict:
    """Everything a Membership holds, as comparable values (not its signing callables)."""
    return copy.deepcopy({name: value for name, value in vars(membership).items() if name not in ("_sign", "_verify")})


def assert_refused(membership: Membership, message: object, sender: object = B) -> None:
    before = state_of(membership)
    with pytest.raises(MembershipError) as caught:
        membership.receive(100.0, sender, message)
    assert "\n" not in str(caught.value) and str(caught.value)
    assert state_of(membership) == before


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(json_like)
def test_json_junk_is_refused_and_changes_nothing(junk):
    membership = busy_membership_for_hypothesis()
    assert_refused(membership, junk)


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(GossipMessage.__dataclass_fields__) + ["type", "v"]),
    st.sampled_from(sorted(NodeRecord.__dataclass_fields__)),
    st.booleans(),
    json_like,
)
def test_a_valid_message_with_one_junk_field_is_refused_or_accepted_never_crashes(
    message_key, record_key, in_record, junk
):
    membership = busy_membership_for_hypothesis()
    message = valid_message()
    if in_record:
        message["records"][0][record_key] = junk
    else:
        message[message_key] = junk
    before = state_of(membership)
    try:
        membership.receive(100.0, B, message)
    except MembershipError as error:
        assert "\n" not in str(error)
        assert state_of(membership) == before


@given(json_like)
def test_record_from_wire_raises_only_membership_error(junk):
    try:
        NodeRecord.from_wire(junk)
    except MembershipError as error:
        assert "\n" not in str(error)


_BUSY: list[Membership] = []


def busy_membership_for_hypothesis() -> Membership:
    """Hypothesis calls a test many times; build the busy node once and hand out copies."""
    if not _BUSY:
        _BUSY.append(busy_membership())
    return copy.deepcopy(_BUSY[0])
