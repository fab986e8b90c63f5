"""Beyond 127.0.0.1: three nodes on three machines (Linux network namespaces on one bridge), each
with its own address, so gossip, routing, the split's RPC tunnels and the layer transfer cross
real addresses.

A (machine 1) founds the mesh and hosts the model, split with B (machine 2, its own copy, less
memory) and C (machine 3, nothing on disk: it receives its layers). C is bound to every
interface: its outward address, which it advertises first, is unreachable from the others, and
its id is the highest, so B must dial it (the lower id dials) past that address. One set-up
serves the whole module.
"""

from __future__ import annotations

import os

import pytest

from meshdesk.core.identity import node_id_for
from tests.mesh_tools import node_key_of
from tests.netns import start_in, three_machines  # noqa: F401  (a fixture)
from tests.nodes import poll

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "The history of the Roman Empire"


def homes_by_id(root, count: int) -> list:
    """`count` homes with node keys, lowest id first (the last one is dialled by all others)."""
    homes = []
    for index in range(count):
        home = root / f"home{index}"
        home.mkdir(mode=0o700)
        homes.append((node_id_for(node_key_of(home).public_bytes), home))
    return [home for _, home in sorted(homes)]


@pytest.fixture(scope="module")
def mesh(three_machines, tmp_path_factory, default_model_path):
    one, two, three = three_machines
    low, middle, high = homes_by_id(tmp_path_factory.mktemp("netns"), 3)
    for home in (low, middle):
        (home / "models").mkdir()
        os.link(default_model_path, home / "models" / default_model_path.name)
    a_home, b_home = low, middle
    started = []
    try:
        a = start_in(one, a_home, "--model", str(default_model_path), "--split", "--threads", "1")
        started.append(a)
        token = a.invite_token()
        b = start_in(two, b_home, "--join", token, "--max-vram", "10", "--split", "--threads", "1")
        started.append(b)
        c = start_in(three, high, "--join", token, "--split", "--threads", "1", "--bind-host", "0.0.0.0")
        started.append(c)
        yield a, b, c
    finally:
        for node in started:
            node.stop()


def peers(node) -> dict:
    return {peer["id"]: peer for peer in node.status()["peers"]}


def test_gossip_crosses_real_addresses(mesh, three_machines):
    a, b, c = mesh
    nodes = {node.node_id: (node, machine) for node, machine in zip(mesh, three_machines)}

    def everyone_linked() -> bool:
        return all(set(peers(node)) == set(nodes) - {node_id}
                   and all(p["linked"] and p["state"] == "alive" for p in peers(node).values())
                   for node_id, (node, _) in nodes.items())
    poll(everyone_linked, 60, interval=0.2, message="three nodes linked across namespaces")
    for node_id, (node, machine) in nodes.items():
        for peer_id, peer in peers(node).items():
            assert nodes[peer_id][1].address in [host for host, _ in peer["addresses"]]


def test_a_node_whose_first_addresses_are_unreachable_is_linked_by_a_lower_id(mesh, three_machines):
    a, b, c = mesh
    advertised = [host for host, _ in peers(b)[c.node_id]["addresses"]] if c.node_id in peers(b) else None
    poll(lambda: peers(b).get(c.node_id, {}).get("linked"), 60, interval=0.2,
         message=f"B linked with C (C advertises {advertised})")
    advertised = [host for host, _ in peers(b)[c.node_id]["addresses"]]
    assert advertised[0] == three_machines[2].unreachable and three_machines[2].address in advertised
    assert b.node_id < c.node_id  # B dialled C, past the unreachable address


def test_a_split_across_namespaces_sends_the_layers_a_member_lacks_and_answers(mesh):
    a, b, c = mesh
    poll(lambda: split_ready(a, {a.node_id, b.node_id, c.node_id}), 120, interval=0.2,
         message=f"the split of three to form: {a.describe()}")
    assert a.status()["plans"][0]["members"][-1]["id"] == a.node_id  # the host last
    assert a.complete(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, seed=1).strip()
    traffic = a.status()["traffic"]
    assert traffic["weights_referenced_bytes"] > 0   # B's layers: by reference to its own file
    assert traffic["weights_sent_bytes"] > 0         # C's: sent once, across the bridge
    # C's latest negotiation: the first received all C lacked; a later one (a re-plan on a loaded
    # machine) finds every tensor held and lacks nothing.
    layers = c.status()["layers"]
    assert layers["received_bytes"] == layers["missing_bytes"]
    assert list(c.home.glob("layers/*/held.json"))   # C keeps the layers it was sent
    assert not list(c.home.glob("models/*.gguf"))    # C keeps layers, not the file


def test_a_request_through_a_node_that_is_not_the_host_is_answered_by_the_host(mesh):
    a, b, c = mesh
    poll(lambda: split_ready(a), 120, interval=0.2, message="the split to form")
    through_host = a.complete(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, seed=1)
    assert c.complete(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, seed=1) == through_host


def split_ready(node, members: set[str] | None = None) -> bool:
    status = node.status()
    plans, models = status["plans"], status["models"]
    return bool(plans and plans[0]["state"] == "split" and models and models[0]["state"] == "ready"
                and (members is None or {member["id"] for member in plans[0]["members"]} == members))
