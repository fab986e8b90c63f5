"""The mesh wants a model, not one node: real node processes, the real model, the `openai` client.

- The issue's scenario: the founder A asks for a split, B (the file on disk too) hosts it; SIGKILL
  of A leaves B serving the model, though no alive node's own record asks for it.
- A drop made on any member converges on every node, and stays dropped across restarts of all
  of them; a later explicit serve brings the model back everywhere.
"""

from __future__ import annotations

import json
import os
import signal

import openai
import pytest

from tests.nodes import poll

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
DEFAULT_MODEL = "SmolLM2-135M-Instruct.Q4_1"  # what a node serves without --model


def seeded_home(tmp_path, name: str, model_path):
    home = tmp_path / name
    (home / "models").mkdir(parents=True)
    os.link(model_path, home / "models" / model_path.name)
    return home


def answer(node, model: str = MODEL) -> str | None:
    """One short completion through `node`, or None while the mesh cannot serve it."""
    try:
        return node.client(timeout=30).completions.create(model=model, prompt="The Roman Empire", max_tokens=4,
                                                          temperature=0).choices[0].text
    except openai.APIError:
        return None


def served_ids(node) -> list[str]:
    return [model.id for model in node.client().models.list().data]


def mesh_wants(home) -> dict[str, bool]:
    stored = json.loads((home / "mesh.json").read_text())
    return {entry["advert"]["name"]: entry["wanted"] for entry in stored["wants"]}


def test_the_model_outlives_its_founder(node_factory, tmp_path, default_model_path):
    founder = node_factory("--model", str(default_model_path), "--split", "--max-vram", "1", "--threads", "1")
    other = node_factory("--join", founder.invite_token(), "--max-vram", "10", "--threads", "1",
                         home=seeded_home(tmp_path, "b", default_model_path))
    poll(lambda: any(plan["state"] == "split" and plan["host"] == other.node_id for plan in other.status()["plans"])
         and other.model_state() == "ready", 120, message="the split hosted by B")
    assert answer(other)
    founder.process.send_signal(signal.SIGKILL)
    founder.process.wait()
    text = poll(lambda: answer(other), 90, interval=0.5, message="B to serve again after the founder's death")
    assert text
    plans = other.status()["plans"]
    assert [(plan["state"], plan["host"]) for plan in plans] == [("solo", other.node_id)]
    assert served_ids(other) == [MODEL]


def test_a_drop_on_any_member_converges_and_survives_restarts_of_every_node(node_factory, tmp_path,
                                                                            smollm2_model_path):
    """On the default model (SmolLM2), which the restarts below choose by themselves."""
    a_home, b_home = seeded_home(tmp_path, "a", smollm2_model_path), seeded_home(tmp_path, "b", smollm2_model_path)
    founder = node_factory("--model", str(a_home / "models" / smollm2_model_path.name), "--threads", "1", home=a_home)
    member = node_factory("--join", founder.invite_token(), "--threads", "1", home=b_home)
    poll(lambda: answer(member, DEFAULT_MODEL) and answer(founder, DEFAULT_MODEL), 120, interval=0.5, message="the model served on both")

    status, body = member.post_json("/api/drop", {"model": DEFAULT_MODEL})  # B never asked for it
    assert status == 200, body
    for node in (founder, member):
        poll(lambda: node.status()["plans"] == [] and served_ids(node) == [], 30, message="the drop on every node")
    assert answer(founder, DEFAULT_MODEL) is None and answer(member, DEFAULT_MODEL) is None

    founder.stop(), member.stop()
    assert mesh_wants(a_home) == mesh_wants(b_home) == {smollm2_model_path.name: False}
    founder = node_factory("--threads", "1", home=a_home)  # each picks the model on its disk by default
    member = node_factory("--threads", "1", home=b_home)
    for node, peer in ((founder, member), (member, founder)):
        poll(lambda: peer.node_id in node.peer_ids(), 30, message="the mesh to form again")
    poll(lambda: founder.status()["mesh"]["members"] == 2, 30, message="both to count two members")
    for node in (founder, member):  # once each has hashed its file and settled its own asks
        poll(lambda: node.status()["wants"] == [] and served_ids(node) == [], 30, message="the drop to stand")
    for node in (founder, member):
        assert node.status()["plans"] == [] and served_ids(node) == [] and node.status()["wants"] == []

    status, body = member.post_json("/api/serve", {"model": str(b_home / "models" / smollm2_model_path.name)})
    assert status == 200, body  # an explicit serve, later than the drop, wins it back
    poll(lambda: answer(founder, DEFAULT_MODEL) and answer(member, DEFAULT_MODEL), 120, interval=0.5, message="the model served again")
    assert mesh_wants(b_home) == {smollm2_model_path.name: True}


def test_a_model_whose_every_holder_left_waits_with_the_reason_and_a_new_holder_serves_it(
        node_factory, tmp_path, default_model_path):
    founder = node_factory("--model", str(default_model_path), "--threads", "1")
    client = node_factory("--client", "--join", founder.invite_token())
    poll(lambda: answer(client), 60, interval=0.5, message="the client to be served through the founder")
    founder.process.send_signal(signal.SIGKILL)
    founder.process.wait()

    def waiting_reason():
        plans = client.status()["plans"]
        return plans and plans[0]["state"] == "waiting" and plans[0]["waiting_reason"]
    reason = poll(waiting_reason, 30, message="the model to wait for a holder")
    assert reason.startswith(f"waiting for a member with the file: no alive member holds {MODEL}"), reason
    assert answer(client) is None

    # the want lives on in the client alone: a newcomer with the file serves it
    token = client.post_json("/api/invite", {"expires_in": 3600})[1]["token"]
    newcomer = node_factory("--join", token, "--threads", "1",
                            home=seeded_home(tmp_path, "newcomer", default_model_path))
    poll(lambda: answer(client), 90, interval=0.5, message="the newcomer to serve the mesh's model")
    assert [(plan["state"], plan["host"]) for plan in client.status()["plans"]] == [("solo", newcomer.node_id)]
