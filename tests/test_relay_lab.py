"""Relays in the NAT lab (tests/nat_lab.py): two members at home behind symmetric routers, where
no punch gets through, and a `meshdesk relay` on the internet.

- The relay is named only to the founder (`--relay`); the members learn it from its record,
  register there, and link with each other through it (`relayed` in their status).
- A split across the two homes answers end to end over the relayed link: asked of the second
  member, whose API passes the request to the host in the other home. The prompt and the answer
  cross the relay that way, yet nothing of them shows on the internet's wire.
"""

from __future__ import annotations

import pytest

from tests.nat_lab import Nat, RelayProcess, Tap, block_from, lab, seeded_home, unblock  # noqa: F401  (a fixture)
from tests.netns import start_in
from tests.nodes import poll
from tests.test_hole_punch import linked_alive, logged, peer_entry, split_ready

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "Aqueducts carried water into the city of Constantinople"
SETTLE = 90.0


def linked_through_relay(node, peer_id: str) -> bool:
    peer = peer_entry(node, peer_id)
    return peer is not None and peer["linked"] and peer["state"] == "alive" and peer.get("relayed") is True


def relayed_address(node) -> str | None:
    return next((entry["address"] for entry in node.status()["node"].get("relays", []) if entry.get("address")), None)


@pytest.fixture(scope="module")
def relayed(lab, tmp_path_factory, default_model_path):
    """A relay and a lite founder on the internet (the founder names the relay), and a member
    with the model in each of two homes behind symmetric routers; the first hosts the split."""
    root = tmp_path_factory.mktemp("relay")
    relay = RelayProcess(lab.public())
    homes = [lab.home(Nat.SYMMETRIC), lab.home(Nat.SYMMETRIC)]
    started = []
    try:
        founder = start_in(lab.public(), seeded_home(root, "founder"), "--client", "--relay", relay.spec)
        started.append(founder)
        for number, home in enumerate(homes):
            serve = ("--model", str(default_model_path)) if number == 0 else ()
            started.append(start_in(home.machines[0], seeded_home(root, f"member{number}", default_model_path),
                                    "--join", founder.invite_token(), *serve, "--split", "--threads", "1",
                                    "--max-vram", ("2", "1")[number]))
        yield relay, *started
    finally:
        for node in started:
            node.stop()
        relay.stop()


def test_members_behind_symmetric_routers_link_through_a_relay_they_learned_of(relayed):
    relay, founder, first, second = relayed
    for member in (first, second):
        poll(lambda: relayed_address(member), SETTLE, interval=0.2,
             message=lambda: f"registered at the relay: {member.describe()} {''.join(relay.output)}")
    poll(lambda: linked_through_relay(first, second.node_id) and linked_through_relay(second, first.node_id),
         SETTLE, interval=0.2, message=lambda: f"the relayed link: {first.describe()} {second.describe()}")
    assert relayed_address(first).startswith(relay.address[0] + ":")
    assert linked_alive(founder, first.node_id) and linked_alive(founder, second.node_id)
    assert not peer_entry(founder, first.node_id).get("relayed")  # the founder is public: direct


def test_a_split_answers_over_the_relayed_link_and_the_wire_shows_none_of_it(relayed, lab):
    relay, founder, first, second = relayed

    poll(lambda: split_ready(first, second), 180, interval=0.2,
         message=lambda: f"the split across the homes: {first.status()} {first.describe()} {second.describe()}")
    assert linked_through_relay(first, second.node_id)
    tap = Tap(lab)
    try:
        before, carried = first.status()["traffic"]["round_trips"], tap.udp_bytes_between(relay.address[0])
        answer = second.complete(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, seed=1)
        assert answer.strip()
        assert first.status()["traffic"]["round_trips"] > before  # the passes waited on the other home
        assert tap.udp_bytes_between(relay.address[0]) - carried > 10_000  # through the relay
        seen = tap.payload()
    finally:
        tap.close()
    assert PROMPT.encode() not in seen and b"Constantinople" not in seen
    words = [word for word in answer.split() if len(word) >= 6]
    assert not any(word.encode() in seen for word in words), words
    assert logged(first, f"the data plane to {second.node_id} runs over QUIC")


@pytest.fixture(scope="module")
def upgraded(lab, tmp_path_factory):
    """A founder on the internet that relays for its mesh (`--serve-relay`), and a lite member in
    each of two homes behind endpoint-independent routers, between which no packet passes at
    first: the first home's router drops all that comes from the second's."""
    root = tmp_path_factory.mktemp("upgrade")
    homes = [lab.home(Nat.ENDPOINT_INDEPENDENT), lab.home(Nat.ENDPOINT_INDEPENDENT)]
    block_from(homes[0], homes[1].wan_address)
    started = []
    try:
        founder = start_in(lab.public(), seeded_home(root, "founder"), "--serve-relay", "9339", "--no-download")
        started.append(founder)
        for number, home in enumerate(homes):
            started.append(start_in(home.machines[0], seeded_home(root, f"member{number}"),
                                    "--join", founder.invite_token(), "--client"))
        yield homes, *started
    finally:
        for node in started:
            node.stop()


def test_a_member_relay_links_two_homes_no_packet_passes_between(upgraded):
    homes, founder, first, second = upgraded
    relay = "{}:9339".format(founder.machine.address)
    assert {"serving": 9339} in founder.status()["node"]["relays"]
    poll(lambda: linked_through_relay(first, second.node_id) and linked_through_relay(second, first.node_id),
         SETTLE, interval=0.2, message=lambda: f"the relayed link: {first.describe()} {second.describe()}")
    for member in (first, second):
        assert any(entry.get("relay") == relay and entry.get("address") for entry in member.status()["node"]["relays"])


def test_a_relayed_link_becomes_direct_once_a_punch_gets_through(upgraded):
    homes, founder, first, second = upgraded
    poll(lambda: linked_through_relay(first, second.node_id), SETTLE, interval=0.2,
         message=lambda: f"the relayed link: {first.describe()} {second.describe()}")
    lower = min((first, second), key=lambda node: node.node_id)
    poll(lambda: logged(lower, "the punch towards"), SETTLE, interval=0.2,
         message=lambda: f"a punch to fail while the path is blocked: {lower.describe()}")
    unblock(homes[0])  # the next try, UPGRADE_ASK_INTERVAL later at most, gets through
    poll(lambda: linked_alive(first, second.node_id) and not peer_entry(first, second.node_id).get("relayed")
         and linked_alive(second, first.node_id) and not peer_entry(second, first.node_id).get("relayed"),
         SETTLE, interval=0.2, message=lambda: f"the direct link: {first.describe()} {second.describe()}")
    assert logged(first, f"punched a direct link with {second.node_id}") or \
        logged(second, f"punched a direct link with {first.node_id}")


def test_two_friends_at_home_neither_public_join_and_link_through_the_relay_in_the_invite(lab, tmp_path):
    """No member on the internet at all: the founder at home names a relay; its first invite
    carries its address there, and a friend behind another symmetric router joins through it."""
    from meshdesk.core.invite import decode_token

    relay = RelayProcess(lab.public())
    homes = [lab.home(Nat.SYMMETRIC), lab.home(Nat.SYMMETRIC)]
    started = []
    try:
        founder = start_in(homes[0].machines[0], seeded_home(tmp_path, "founder"), "--client", "--relay", relay.spec)
        started.append(founder)
        invite = founder.invite_token()
        assert any(host == relay.address[0] for host, _ in decode_token(invite).addresses)
        friend = start_in(homes[1].machines[0], seeded_home(tmp_path, "friend"), "--client", "--join", invite)
        started.append(friend)
        poll(lambda: linked_through_relay(founder, friend.node_id) and linked_through_relay(friend, founder.node_id),
             SETTLE, interval=0.2, message=lambda: f"the friends' link: {founder.describe()} {friend.describe()}")
    finally:
        for node in started:
            node.stop()
        relay.stop()
