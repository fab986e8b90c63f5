"""The OpenAI-compatible API of a real `meshdesk --headless` node, through the official client."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import time
import urllib.request

import openai
import pytest

from meshdesk.app.command_line import DEFAULT_CONTEXT
from meshdesk.core.status import StatusSnapshot
from tests.nodes import poll

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
COUNTING_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,"


def post_raw(node, path: str, body: bytes, content_type: str = "application/json"):
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=body,
                                     headers={"Content-Type": content_type, **node.auth()}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_openai_error(body: dict) -> dict:
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


# --- answers -------------------------------------------------------------------------------


def test_chat_completion_answers_with_usage(shared_node):
    reply = shared_node.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8, temperature=0)
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_completion_honours_max_tokens_and_reports_length(shared_node):
    reply = shared_node.client().completions.create(
        model=MODEL, prompt=COUNTING_PROMPT, max_tokens=6, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 6
    assert "16" in reply.choices[0].text


def test_streamed_chat_matches_the_whole_answer(shared_node):
    client = shared_node.client()
    arguments = dict(model=MODEL, messages=[{"role": "user", "content": "Say something."}],
                     max_tokens=12, temperature=0, seed=7)
    whole = client.chat.completions.create(**arguments).choices[0].message.content
    chunks = list(client.chat.completions.create(**arguments, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == whole
    finishing = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert len(finishing) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_streamed_completion_ends_with_done(shared_node):
    stream = shared_node.client().completions.create(
        model=MODEL, prompt=COUNTING_PROMPT, max_tokens=5, temperature=0, stream=True)
    chunks = list(stream)  # the client stops at `data: [DONE]`; it raises if it never comes
    text = "".join(chunk.choices[0].text for chunk in chunks)
    assert "16" in text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_sequences_end_the_answer(shared_node):
    reply = shared_node.client().completions.create(
        model=MODEL, prompt=COUNTING_PROMPT, max_tokens=30, temperature=0, stop=["19"])
    assert reply.choices[0].finish_reason == "stop"
    assert "19" not in reply.choices[0].text and "18" in reply.choices[0].text


def test_seed_makes_sampling_repeatable(shared_node):
    client = shared_node.client()

    def sample(seed: int) -> str:
        return client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16,
                                          temperature=1.0, top_p=1.0, seed=seed).choices[0].text

    assert sample(11) == sample(11)
    assert len({sample(seed) for seed in (1, 2, 3)}) > 1


def test_aliases_reach_the_same_model(shared_node):
    reply = shared_node.client().completions.create(model="gemma-3-270m", prompt="Hi", max_tokens=1)
    assert reply.choices[0].text is not None


def test_models_and_status(shared_node):
    models = shared_node.client().models.list()
    assert [model.id for model in models.data] == [MODEL]
    status = shared_node.status()
    assert set(status["node"]) >= {"id", "name", "home", "version"}
    assert status["node"]["home"] == str(shared_node.home.resolve())
    assert status["api_port"] == shared_node.port
    assert status["models"][0]["id"] == MODEL
    assert status["models"][0]["state"] == "ready"
    assert status["models"][0]["path"].endswith(".gguf")
    assert StatusSnapshot.from_wire(status).to_wire() == status  # the typed snapshot is the whole wire


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"\xff\xfe", None),
    (b"[]", None),
    (json.dumps({"model": MODEL}).encode(), "messages"),
    (json.dumps({"model": MODEL, "messages": "hi"}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                 "max_tokens": "ten"}).encode(), "max_tokens"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                 "temperature": 7}).encode(), "temperature"),
])
def test_malformed_chat_requests_get_400(shared_node, body, param):
    status, response = post_raw(shared_node, "/v1/chat/completions", body)
    assert status == 400
    error = assert_openai_error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_client_sees_bad_request_error(shared_node):
    with pytest.raises(openai.BadRequestError) as caught:
        shared_node.client().completions.create(model=MODEL, prompt="x", max_tokens=-1)
    assert caught.value.body["param"] == "max_tokens"


def test_unknown_model_is_404(shared_node):
    with pytest.raises(openai.NotFoundError) as caught:
        shared_node.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in caught.value.message
    assert caught.value.body["code"] == "model_not_found"


def test_oversized_body_is_413(shared_node):
    huge = json.dumps({"model": MODEL, "prompt": "x" * (9 * 1024 * 1024)}).encode()
    status, response = post_raw(shared_node, "/v1/completions", huge)
    assert status == 413
    assert_openai_error(response)


def test_unknown_route_is_an_openai_404(shared_node):
    status, response = post_raw(shared_node, "/v1/nothing-here", b"{}")
    assert status == 404
    assert_openai_error(response)


def test_prompt_longer_than_the_context_is_400(shared_node):
    words = DEFAULT_CONTEXT + 1000  # a token each, at least: past the node's context
    with pytest.raises(openai.BadRequestError) as caught:
        shared_node.client().completions.create(model=MODEL, prompt="word " * words, max_tokens=1)
    assert "context" in caught.value.message


# --- load and fairness ---------------------------------------------------------------------


def test_eight_concurrent_clients_all_complete(shared_node):
    client = shared_node.client()

    def ask(index: int) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say the number {index}."}],
            max_tokens=6, temperature=0, stream=index % 2 == 0)
        if index % 2 == 0:
            return "".join(chunk.choices[0].delta.content or "" for chunk in reply if chunk.choices)
        return reply.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert len(answers) == 8 and all(isinstance(answer, str) for answer in answers)


def test_a_client_that_disconnects_mid_stream_stops_its_generation(shared_node):
    """A long answer abandoned after two chunks must not hold the queue for its whole length."""
    client = shared_node.client()
    stream = client.completions.create(model=MODEL, prompt=COUNTING_PROMPT, max_tokens=3000,
                                       temperature=0, stream=True)
    for _, _chunk in zip(range(2), stream):
        pass
    stream.close()
    started = time.monotonic()
    client.completions.create(model=MODEL, prompt="Hi", max_tokens=1)
    # 3000 tokens take over a minute here; a cancelled generation frees the model at once.
    assert time.monotonic() - started < 20


# --- the model host child ------------------------------------------------------------------


def test_killing_the_model_host_gives_503_then_it_serves_again(node_factory, default_model_path):
    node = node_factory("--model", str(default_model_path))
    node.wait_until_ready()
    client = node.client(max_retries=0)
    stream = client.completions.create(model=MODEL, prompt=COUNTING_PROMPT, max_tokens=200,
                                       temperature=0, stream=True)
    chunks = iter(stream)
    next(chunks)
    os.kill(node.status()["models"][0]["pid"], signal.SIGKILL)
    # once the node has seen it go (a request sent before would reach the dying child and be
    # carried on by the restarted one, as the answer under way is)
    poll(lambda: node.status()["models"][0]["state"] != "ready", 30, message="the node to see its host exit")
    with pytest.raises(openai.InternalServerError) as caught:  # a new request, while it restarts
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=1)
    assert caught.value.status_code == 503
    assert caught.value.response.headers.get("Retry-After")
    # the answer under way is carried on by the restarted child (tests/test_resume.py)
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"

    node.wait_until_ready()
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices[0].text is not None


def test_model_host_child_exits_when_its_node_is_killed(node_factory, default_model_path):
    node = node_factory("--model", str(default_model_path))
    node.wait_until_ready()
    child = node.status()["models"][0]["pid"]
    node.process.kill()
    node.process.wait()
    poll(lambda: not process_alive(child), 15, message="the orphaned model host to exit")


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_api_listens_on_loopback_only(shared_node):
    with pytest.raises(OSError):
        address = outward_address()
        if address is None:
            pytest.skip("this machine has no non-loopback address")
        socket.create_connection((address, shared_node.port), timeout=2).close()


def outward_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by a UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address
