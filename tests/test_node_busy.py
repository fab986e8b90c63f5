"""A real node on the bundled SmolLM2 with one sequence (`--parallel 1`): answers beyond it wait
in turn, /api/status shows them, a full queue is a 429 with Retry-After to the official openai
and anthropic SDKs, and to a friend's lite client whose request crossed the mesh to it; a waiter
whose client leaves frees its place, and the rest all finish."""

from __future__ import annotations

import concurrent.futures
import http.client
import json

import anthropic
import openai
import pytest

from tests.nodes import poll

pytestmark = pytest.mark.slow
WAITING_BOUND = 4  # core.parallel.most_waiting(1)


def model_load(node) -> dict:
    return node.status()["models"][0]


def test_a_full_queue_is_a_429_and_the_waiting_answers_all_finish(node_factory, smollm2_model_path):
    node = node_factory("--model", str(smollm2_model_path), "--parallel", "1", "--threads", "1")
    node.wait_until_ready()
    model = model_load(node)["id"]
    friend = node_factory("--join", node.invite_token(), "--client")
    poll(lambda: [entry.id for entry in friend.client().models.list().data] == [model], 60,
         message="the friend to see the model")
    client = node.client()
    long = client.chat.completions.create(model=model, max_tokens=400, temperature=0, stream=True,
                                          messages=[{"role": "user", "content": "Count from 1 to 300."}])
    chunks = iter(long)
    next(chunks)
    pool = concurrent.futures.ThreadPoolExecutor(WAITING_BOUND)
    waiting = []
    for n in range(WAITING_BOUND - 1):
        waiting.append(pool.submit(client.chat.completions.create, model=model, max_tokens=2, temperature=0,
                                   messages=[{"role": "user", "content": f"Say {n}."}]))
        poll(lambda: model_load(node).get("queued", 0) == n + 1, 30, message=f"{n + 1} waiting")
    quitter = raw_request(node, model)  # the last place, taken by a client that will leave
    poll(lambda: model_load(node).get("queued", 0) == WAITING_BOUND, 30, message="a full queue")
    load = model_load(node)
    assert (load["generating"], load["queued"], load["parallel"]) == (1, WAITING_BOUND, 1)

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.status_code == 429 and int(refused.value.response.headers["Retry-After"]) >= 1
    assert refused.value.body["code"] == "rate_limit_exceeded"
    claude = anthropic.Anthropic(base_url=f"http://127.0.0.1:{node.port}", api_key="meshdesk", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as refused_too:
        claude.messages.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert refused_too.value.status_code == 429 and refused_too.value.response.headers["Retry-After"]
    with pytest.raises(openai.RateLimitError) as refused_remotely:  # the host's "busy" over QUIC
        friend.client().chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert int(refused_remotely.value.response.headers["Retry-After"]) >= 1
    assert model_load(node)["queued"] == WAITING_BOUND  # it took no place: the queue was full

    quitter.close()  # its client went away while it waited: its place is free at once
    poll(lambda: model_load(node).get("queued", 0) == WAITING_BOUND - 1, 30, message="the place freed")
    long.close()
    answers = [future.result(timeout=120) for future in waiting]
    assert all(answer.choices[0].finish_reason in ("stop", "length") for answer in answers)
    poll(lambda: "queued" not in model_load(node) and "generating" not in model_load(node), 30,
         message="the queue to drain")
    assert client.chat.completions.create(model=model, max_tokens=2,
                                          messages=[{"role": "user", "content": "Hi"}]).choices
    assert friend.client().chat.completions.create(model=model, max_tokens=2,
                                                   messages=[{"role": "user", "content": "Hi"}]).choices


def raw_request(node, model: str) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    body = json.dumps({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    return connection
