"""The batch engine when things go wrong, in this process on the bundled SmolLM2 (issue 16):
one answer's failure is its own, an abandoned prompt stops being read, an empty prompt starts
from the model's start token. What each would show failing: an engine thread killed by one
answer leaves every later connection waiting for ever; one that notices a gone client only
every 16 sampled tokens reads the rest of a long prompt for nobody, holding up everyone else.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from meshdesk.core.openai_api import GenerationRequest

pytestmark = pytest.mark.slow
LONG_PROMPT = "Summarise this. " + " ".join(f"word{i}" for i in range(400))  # ~1700 tokens: 7 chunks


def request(content: str = "Name a colour.", **fields) -> GenerationRequest:
    base = dict(kind="chat", model="smollm2", messages=({"role": "user", "content": content},), prompt="",
                max_tokens=8, temperature=0.0, top_p=1.0, stop=(), seed=None, stream=True, include_usage=False)
    return GenerationRequest(**(base | fields))


@pytest.fixture(scope="module")
def server(smollm2_model_path):
    from meshdesk.adapters.llama import host

    arguments = host.parse_arguments(["--model", str(smollm2_model_path), "--parallel", "2", "--threads", "2",
                                      "--context", "2048", "--speculative", "off"])
    model = host.load_model(arguments)
    return host.HostServer(model, host.chat_format(model.llama), 2, 2048)


def served(server, asked: GenerationRequest) -> tuple[threading.Thread, socket.socket, list[dict], threading.Thread]:
    """`asked` served on a thread as the node's connection would be; its events land in the list."""
    ours, theirs = socket.socketpair()  # the request is handed over as read_request would give it
    events: list[dict] = []

    def serve():
        from meshdesk.adapters.llama import host

        with ours:
            try:
                server.serve(ours, asked)
            except host.PromptRejected as error:
                host.send_line(ours, {"type": "error", "kind": "request", "message": str(error)})
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def read():
        try:
            for line in theirs.makefile("rb"):
                events.append(json.loads(line))
        except (OSError, ValueError):
            pass
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return thread, theirs, events, reader


def answered(server, asked: GenerationRequest) -> list[dict]:
    thread, theirs, events, reader = served(server, asked)
    thread.join(120)
    assert not thread.is_alive(), "the answer never left the engine"
    # Every line is read before the list is looked at: the serving side has closed its end, so
    # the reader ends at EOF (closing ours first could cut off the last lines unread).
    reader.join(30)
    assert not reader.is_alive(), "the answer's connection never ended"
    theirs.close()
    return events


def test_an_answer_whose_sampler_cannot_be_made_fails_alone_and_the_engine_goes_on(server, monkeypatch):
    from meshdesk.adapters.llama import batch_engine

    engine = server.engine
    make_sampler = batch_engine.sampler_for
    failures = iter([RuntimeError("no sampler for this one")])

    def once_broken(llama, answer):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return make_sampler(llama, answer)
    monkeypatch.setattr(batch_engine, "sampler_for", once_broken)
    broken = answered(server, request())
    assert broken[-1]["type"] == "error" and "no sampler" in broken[-1]["message"], broken
    after = answered(server, request())
    assert after[-1]["type"] == "finish" and any(event["type"] == "delta" for event in after), after
    assert engine.load() == (0, 0)


def test_a_prompt_whose_client_left_stops_being_read_within_a_chunk(server, monkeypatch):
    engine = server.engine
    fill = engine._fill
    connections: list[socket.socket] = []

    def fill_then_leave(decoding):
        rows = fill(decoding)
        while connections:  # the client leaves once its first chunk is in
            connections.pop().shutdown(socket.SHUT_RDWR)  # (close would wait for the reader's file)
        return rows
    monkeypatch.setattr(engine, "_fill", fill_then_leave)
    steps = engine.steps
    thread, theirs, _, _ = served(server, request(LONG_PROMPT, max_tokens=64))
    connections.append(theirs)
    thread.join(120)
    assert not thread.is_alive()
    assert engine.steps - steps <= 2, f"{engine.steps - steps} passes for a client that left after the first"
    monkeypatch.setattr(engine, "_fill", fill)
    assert answered(server, request())[-1]["type"] == "finish"


def test_an_empty_completion_prompt_starts_from_the_models_start_token(server):
    events = answered(server, request(kind="completion", messages=(), prompt=""))
    assert events[-1]["type"] == "finish", events
    assert events[-1]["usage"]["prompt_tokens"] == 1
