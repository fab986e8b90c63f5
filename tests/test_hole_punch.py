"""Hole punching in the NAT lab (tests/nat_lab.py): members at home behind routers that let in
only what answers a flow from inside.

- Two members in two homes behind endpoint-independent routers, which no dial can reach, link
  directly: the founder on the internet, linked to both, introduces them and both punch.
- A split across those two homes answers end to end: no TCP path crosses either router, so
  its rpc tunnel runs over a stream of the punched QUIC link.
- Behind symmetric routers the punch cannot work: the members stay apart, the routers drop
  the punches, and the mesh still holds them both (through the founder's gossip).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from tests.nat_lab import Nat, lab, seeded_home  # noqa: F401  (a fixture)
from tests.netns import start_in
from tests.nodes import poll

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "The history of the Roman Empire"
SETTLE = 60.0


@contextmanager
def founder_and_members(lab, root, machines, arguments_for, model_path=None):
    """A lite founder on the internet and a member on each of `machines`, joined by its invite
    (`arguments_for(number)`: member `number`'s own options); all stopped afterwards."""
    started = []
    try:
        founder = start_in(lab.public(), seeded_home(root, "founder"), "--client")
        started.append(founder)
        for number, machine in enumerate(machines):
            started.append(start_in(machine, seeded_home(root, f"member{number}", model_path),
                                    "--join", founder.invite_token(), *arguments_for(number)))
        yield started
    finally:
        for node in started:
            node.stop()


def logged(node, words: str) -> bool:
    log = node.home / "logs" / "meshdesk.log"
    return log.exists() and words in log.read_text()


def peer_entry(node, peer_id: str) -> dict | None:
    return next((peer for peer in node.status()["peers"] if peer["id"] == peer_id), None)


def linked_alive(node, peer_id: str) -> bool:
    peer = peer_entry(node, peer_id)
    return peer is not None and peer["linked"] and peer["state"] == "alive"


def split_ready(host, member) -> bool:
    """`host` serves the model ready, split between it and `member` alone."""
    status = host.status()
    plans, models = status["plans"], status["models"]
    return bool(plans and plans[0]["state"] == "split" and plans[0]["host"] == host.node_id
                and {entry["id"] for entry in plans[0]["members"]} == {host.node_id, member.node_id}
                and models and models[0]["state"] == "ready")


def alive(node, peer_id: str) -> bool:
    peer = peer_entry(node, peer_id)
    return peer is not None and peer["state"] == "alive"


@pytest.fixture(scope="module")
def punched(lab, tmp_path_factory, default_model_path):
    """A lite founder on the internet, and a member with the model in each of two homes behind
    endpoint-independent routers; the first serves it and offers more memory, so it hosts the
    split."""
    root = tmp_path_factory.mktemp("punch")
    homes = [lab.home(Nat.ENDPOINT_INDEPENDENT), lab.home(Nat.ENDPOINT_INDEPENDENT)]

    def arguments_for(number: int) -> tuple[str, ...]:
        serve = ("--model", str(default_model_path)) if number == 0 else ()
        return (*serve, "--split", "--threads", "1", "--max-vram", ("2", "1")[number])
    with founder_and_members(lab, root, [home.machines[0] for home in homes], arguments_for,
                             default_model_path) as (founder, first, second):
        yield founder, first, second, homes


def test_two_members_behind_endpoint_independent_routers_link_directly(punched):
    founder, first, second, homes = punched
    poll(lambda: linked_alive(first, second.node_id) and linked_alive(second, first.node_id), SETTLE,
         interval=0.2, message=f"the punched link: {first.describe()} {second.describe()}")
    assert logged(first, f"punched a direct link with {second.node_id}") or \
        logged(second, f"punched a direct link with {first.node_id}")


def test_a_split_across_two_homes_answers_over_the_punched_link(punched):
    founder, first, second, homes = punched

    poll(lambda: split_ready(first, second), 180, interval=0.2,
         message=lambda: f"the split across the homes: {first.status()} {first.describe()} {second.describe()} "
                         f"{(first.home / 'logs' / 'meshdesk.log').read_text()[-12000:]}")
    before = first.status()["traffic"]["round_trips"]
    assert first.complete(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, seed=1).strip()
    assert first.status()["traffic"]["round_trips"] > before  # the passes waited on the other home
    assert logged(first, f"the data plane to {second.node_id} runs over QUIC")


@pytest.fixture(scope="module")
def symmetric(lab, tmp_path_factory):
    root = tmp_path_factory.mktemp("symmetric")
    homes = [lab.home(Nat.SYMMETRIC), lab.home(Nat.SYMMETRIC)]
    with founder_and_members(lab, root, [home.machines[0] for home in homes],
                             lambda number: ("--client",)) as (founder, first, second):
        yield founder, first, second, homes


def test_behind_symmetric_routers_the_punch_fails_and_the_mesh_still_holds_both(symmetric):
    founder, first, second, homes = symmetric
    lower, higher = sorted((first, second), key=lambda node: node.node_id)
    poll(lambda: logged(lower, "punching towards") and logged(higher, "punching towards"), SETTLE,
         interval=0.2, message=f"both told to punch: {lower.describe()} {higher.describe()}")
    dropped = [home.unsolicited_dropped() for home in homes]
    poll(lambda: all(home.unsolicited_dropped() > count for home, count in zip(homes, dropped)), SETTLE,
         interval=0.2, message="each router to drop punches from ports no mapping knew")
    poll(lambda: logged(lower, "the punch towards"), SETTLE, interval=0.2,
         message=f"the punch to fail: {lower.describe()}")
    assert not linked_alive(first, second.node_id) and not linked_alive(second, first.node_id)
    assert alive(first, second.node_id) and alive(second, first.node_id)  # the founder's gossip
    assert linked_alive(founder, first.node_id) and linked_alive(founder, second.node_id)
