"""Split inference across real nodes on loopback, compared with direct llama.cpp RPC."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from tests.nodes import poll
from tests.split_tools import children, direct_rpc_completion, listening_addresses, maps_library

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "The history of the Roman Empire"


def seeded_home(tmp_path, name: str, model_path) -> "os.PathLike":
    home = tmp_path / name
    (home / "models").mkdir(parents=True)
    os.link(model_path, home / "models" / model_path.name)
    return home


def start_split(node_factory, tmp_path, model_path):
    host = node_factory("--model", str(model_path), "--split", "--threads", "1")
    worker = node_factory("--join", host.invite_token(), "--max-vram", "10", "--threads", "1",
                          home=seeded_home(tmp_path, "worker", model_path))
    try:
        poll(lambda: split_plan(host) is not None and host.model_state() == "ready", 90,
             message="the split to be running")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}: {host.describe()} WORKER {worker.describe()} "
                             f"WORKER STACKS {worker.stacks()}") from None
    return host, worker


def split_plan(node) -> dict | None:
    plans = node.status()["plans"]
    return plans[0] if plans and plans[0]["state"] == "split" else None


def post_json(node, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **node.auth()}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def completion(node, max_tokens: int = 24) -> str:
    return node.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=max_tokens,
                                            temperature=0, seed=1).choices[0].text


def test_split_answers_exactly_like_direct_rpc_and_loads_no_weights_over_the_network(
        node_factory, tmp_path, default_model_path):
    host, worker = start_split(node_factory, tmp_path, default_model_path)
    plan = split_plan(host)
    assert plan["host"] == host.node_id and [m["id"] for m in plan["members"]] == [worker.node_id, host.node_id]
    assert host.status()["node"]["role"] == "host"
    poll(lambda: worker.status()["node"]["role"] == "worker", 10, message="the worker's role")

    through_mesh = completion(host)
    assert completion(worker) == through_mesh  # the worker routes to the host
    shares = [member["share"] for member in plan["members"]]
    assert through_mesh == direct_rpc_completion(default_model_path, shares, PROMPT, 24)

    traffic = host.status()["traffic"]
    member_share_bytes = default_model_path.stat().st_size * shares[0]
    assert traffic["weights_referenced_bytes"] > 0.5 * member_share_bytes * 0.5
    assert traffic["weights_sent_bytes"] <= 0.01 * member_share_bytes
    assert traffic["activations_bytes"] > 0


def test_rpc_workers_listen_on_loopback_only(node_factory, tmp_path, default_model_path):
    host, worker = start_split(node_factory, tmp_path, default_model_path)
    for node in (host, worker):
        (pid,) = children(node.process.pid, "meshdesk.adapters.llama.rpc_worker")
        addresses = listening_addresses(pid)
        assert addresses and all(address.startswith("0100007F:") for address in addresses), addresses


def test_a_capacity_change_replans_the_mesh(node_factory, tmp_path, default_model_path):
    host, worker = start_split(node_factory, tmp_path, default_model_path)
    post_json(worker, "/api/capacity", {"donating": False})
    poll(lambda: host.status()["plans"][0]["state"] == "solo" and host.model_state() == "ready", 60,
         message="the host to re-plan solo")
    assert completion(host, 4)
    post_json(worker, "/api/capacity", {"donating": True})
    poll(lambda: split_plan(host) is not None and host.model_state() == "ready", 60,
         message="the split to come back")
    assert completion(host, 4)


# A member killed mid-answer: the host carries the answer on alone (tests/test_resume.py).


def test_lite_client_chats_through_the_host_without_llama_cpp(node_factory, default_model_path):
    host = node_factory("--model", str(default_model_path), "--threads", "1")
    client = node_factory("--client", "--join", host.invite_token())
    poll(lambda: client.status()["models"] and client.status()["models"][0]["state"] == "remote", 20,
         message="the client to learn the mesh's model")
    host.wait_until_ready()
    reply = client.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    assert reply.choices[0].message.content is not None
    assert [m.id for m in client.client().models.list().data] == [MODEL]
    status = client.status()
    assert status["node"]["role"] == "client" and status["offer"]["capacity_bytes"] == 0
    assert not children(client.process.pid, "meshdesk")
    assert not maps_library(client.process.pid, "libllama")
    assert not maps_library(client.process.pid, "libggml")


def test_rpc_worker_reports_the_devices_it_serves(tmp_path):
    from tests.split_tools import Child

    worker = Child("meshdesk.adapters.llama.rpc_worker", "--threads", "1")
    try:
        worker.port()
        assert worker.ready["devices"] == ["CPU"]  # no GPU backend on this machine
        assert worker.ready["gpu_memory_bytes"] is None  # so the node offers RAM minus a reserve
    finally:
        worker.stop()
