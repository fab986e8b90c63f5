"""An answer survives losing a machine: real nodes, real llama.cpp, the `openai` client.

Every answer is greedy (temperature 0, a seed) and long enough to kill its host mid-stream:
the test reads a few chunks, SIGKILLs, and reads on.
"""

from __future__ import annotations

import json
import signal
import socket

import openai
import pytest

from meshdesk.core.continuation import continuation
from meshdesk.core.openai_api import parse_chat_request, parse_completion_request
from tests.nodes import poll
from tests.split_tools import Child
from tests.test_split import MODEL, PROMPT, seeded_home, start_split

pytestmark = pytest.mark.slow

HOST_MODULE = "meshdesk.adapters.llama.host"
MAX_TOKENS = 120
CHUNKS_BEFORE_KILL = 12


def host_events(port: int, request) -> list[dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        connection.sendall(json.dumps(request.to_wire()).encode() + b"\n")
        events = [json.loads(line) for line in connection.makefile() if line.strip()]
    assert events[-1]["type"] == "finish", events[-1]
    return events


def host_request(port: int, request) -> tuple[str, dict]:
    events = host_events(port, request)
    return "".join(event.get("text", "") for event in events), events[-1]


def test_the_model_host_child_carries_an_answer_on_from_its_text_so_far(default_model_path):
    # No speculation: a carried-on answer's finish must equal the whole one's, and speculation
    # counts (passes of this host alone) would differ.
    child = Child(HOST_MODULE, "--model", str(default_model_path), "--threads", "1", "--speculative", "off")
    try:
        port = child.port()
        for request in (
            parse_completion_request({"model": "m", "prompt": PROMPT, "max_tokens": 40, "temperature": 0,
                                      "seed": 1}),
            parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "Tell me about Rome."}],
                                "max_tokens": 40, "temperature": 0, "seed": 1}),
        ):
            events = host_events(port, request)
            whole, finish = "".join(event.get("text", "") for event in events), events[-1]
            assert finish["finish_reason"] == "length" and finish["usage"]["completion_tokens"] == 40
            start = "".join(event["text"] for event in events[:12])  # as a gateway keeps the deltas
            rest, carried = host_request(port, continuation(request, start))
            # the same answer (greedy; the text so far is one batch now, so a near tie late in
            # the answer may go the other way), counted as one: the client's prompt, all 40 tokens
            assert common_prefix(start + rest, whole) > len(start) + 20, (start, rest, whole)
            assert carried == finish
            done, complete = host_request(port, continuation(request, whole))
            assert done == "" and complete["finish_reason"] == "length"  # nothing left of max_tokens
            assert complete["usage"] == finish["usage"]
    finally:
        child.stop()


def test_an_answer_carried_on_at_the_end_of_the_context_finishes_with_length(default_model_path):
    child = Child(HOST_MODULE, "--model", str(default_model_path), "--threads", "1", "--context", "48")
    try:
        port = child.port()
        request = parse_completion_request({"model": "m", "prompt": PROMPT, "temperature": 0, "seed": 1})
        whole, finish = host_request(port, request)  # no max_tokens: to the end of the context
        assert finish["finish_reason"] == "length"
        rest, carried = host_request(port, continuation(request, whole + " and more words still"))
        assert rest == "" and carried["finish_reason"] == "length"  # not the client's prompt error
    finally:
        child.stop()


def common_prefix(one: str, other: str) -> int:
    return next((index for index, (a, b) in enumerate(zip(one, other)) if a != b), min(len(one), len(other)))


def streamed(stream, on_chunk=lambda count: None) -> dict:
    """Reads a whole `openai` stream: its text, roles, finish reasons and usage chunks."""
    text, roles, finishes, usages, count, lengths = [], [], [], [], 0, [0]
    for chunk in stream:
        count += 1
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            content = choice.delta.content if hasattr(choice, "delta") else choice.text
            if getattr(getattr(choice, "delta", None), "role", None):
                roles.append(choice.delta.role)
            text.append(content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
        lengths.append(sum(map(len, text)))
        on_chunk(count)
    return {"text": "".join(text), "roles": roles, "finishes": finishes, "usages": usages, "lengths": lengths}


def assert_carried_on(answer: dict, reference: str) -> None:
    """The greedy answer up to the kill, then on from there: never started again (its opening
    once), as long as an answer of MAX_TOKENS (the continuation's prompt is one batch, so a near
    tie after the kill may go the other way than in `reference`)."""
    text = answer["text"]
    assert common_prefix(text, reference) >= answer["lengths"][CHUNKS_BEFORE_KILL] > 0
    assert text.count(text[:30]) == 1, text
    assert 0.7 * len(reference) < len(text) < 1.3 * len(reference), (text, reference)


def chat_stream(node):
    return node.client(max_retries=0, timeout=120).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about Rome."}],
        max_tokens=MAX_TOKENS, temperature=0, seed=1, stream=True, stream_options={"include_usage": True})


def kill_after(count: int, victim):
    def on_chunk(seen: int) -> None:
        if seen == count:
            victim().process.send_signal(signal.SIGKILL)
    return on_chunk


def requests_served(node) -> int:
    models = node.status()["models"]
    return models[0].get("requests", 0) if models else 0


def test_the_host_killed_mid_answer_the_request_is_carried_on_by_another_host_through_a_client_node(
        node_factory, tmp_path, default_model_path):
    first = node_factory("--model", str(default_model_path), "--threads", "1")
    second = node_factory("--join", first.invite_token(), "--threads", "1",
                          home=seeded_home(tmp_path, "second", default_model_path))
    gateway = node_factory("--client", "--join", first.invite_token())
    poll(lambda: gateway.status()["models"] and gateway.status()["models"][0]["state"] == "remote", 60,
         message="the client node to learn the model")
    first.wait_until_ready()
    second.wait_until_ready()  # the file on disk makes it a second replica
    reference = streamed(chat_stream(gateway))
    assert reference["usages"][0].completion_tokens == MAX_TOKENS, reference
    hosts = {id(node): requests_served(node) for node in (first, second)}

    def host():  # the host this request went to: the one that counts one more request
        return next(node for node in (first, second) if requests_served(node) > hosts[id(node)])
    answer = streamed(chat_stream(gateway), kill_after(CHUNKS_BEFORE_KILL, host))
    assert answer["roles"] == ["assistant"] and answer["finishes"] == ["length"]
    assert len(answer["usages"]) == 1
    usage = answer["usages"][0]
    assert (usage.prompt_tokens, usage.completion_tokens) == (reference["usages"][0].prompt_tokens, MAX_TOKENS)
    assert_carried_on(answer, reference["text"])
    assert (first.process.poll() is None) != (second.process.poll() is None)  # one was killed


def test_a_member_killed_mid_answer_the_host_carries_it_on_alone_through_its_own_gateway(
        node_factory, tmp_path, default_model_path):
    host, worker = start_split(node_factory, tmp_path, default_model_path)

    def completion_stream():
        return host.client(max_retries=0, timeout=120).completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, seed=1, stream=True,
            stream_options={"include_usage": True})
    reference = streamed(completion_stream())
    answer = streamed(completion_stream(), kill_after(CHUNKS_BEFORE_KILL, lambda: worker))
    assert answer["finishes"] == ["length"] and len(answer["usages"]) == 1
    assert answer["usages"][0].completion_tokens == MAX_TOKENS
    assert answer["usages"][0].prompt_tokens == reference["usages"][0].prompt_tokens
    assert_carried_on(answer, reference["text"])
    assert worker.process.poll() is not None
    assert host.status()["plans"][0]["state"] == "solo" and host.process.poll() is None


def test_a_member_killed_under_a_remote_host_the_client_node_carries_the_answer_on(
        node_factory, tmp_path, default_model_path):
    host, worker = start_split(node_factory, tmp_path, default_model_path)
    gateway = node_factory("--client", "--join", host.invite_token())
    poll(lambda: gateway.status()["models"] and gateway.status()["models"][0]["state"] == "remote", 60,
         message="the client node to learn the model")
    reference = streamed(chat_stream(gateway))
    answer = streamed(chat_stream(gateway), kill_after(CHUNKS_BEFORE_KILL, lambda: worker))
    assert answer["roles"] == ["assistant"] and answer["finishes"] == ["length"]
    assert len(answer["usages"]) == 1 and answer["usages"][0].completion_tokens == MAX_TOKENS
    assert_carried_on(answer, reference["text"])
    assert worker.process.poll() is not None and host.process.poll() is None


def test_with_no_host_left_the_stream_ends_with_a_clear_error_within_the_bound(node_factory, default_model_path):
    host = node_factory("--model", str(default_model_path), "--threads", "1")
    gateway = node_factory("--client", "--join", host.invite_token(), environment={"MESHDESK_RESUME_SECONDS": "8"})
    poll(lambda: gateway.status()["models"] and gateway.status()["models"][0]["state"] == "remote", 60,
         message="the client node to learn the model")
    host.wait_until_ready()
    with pytest.raises(openai.APIError, match="lost mid-answer.*within 8 s"):
        streamed(chat_stream(gateway), kill_after(CHUNKS_BEFORE_KILL, lambda: host))
    assert gateway.process.poll() is None
