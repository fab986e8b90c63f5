"""Continuous batching in a real model host child (`--parallel N`) on the bundled SmolLM2: several
connections at once, each its own answer, decoded together (issue 16, items 1 and 2).

What each would show failing: a host that serves one connection at a time never decodes two
answers in one step (`batch.widest` stays 1) and makes the newcomer wait for the whole answer
ahead of it; one that evaluates a newcomer's prompt in one pass gives the running stream no token
while it does; one whose answers share a sampler or a cache sequence mixes their texts.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from meshdesk.core.openai_api import GenerationRequest

pytestmark = pytest.mark.slow
ADD = {"name": "add", "description": "Add two integers.", "parameters": {  # the host's (read) shape
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}


class Host:
    """A real model host child, and connections to it."""

    def __init__(self, model_path, parallel: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meshdesk.adapters.llama.host", "--model", str(model_path),
             "--parallel", str(parallel), "--threads", "2", "--context", "2048"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ready = json.loads(self.process.stdout.readline())
        assert self.ready["event"] == "ready", self.ready

    def open(self, request: dict) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.ready["port"]))
        connection.sendall(json.dumps(request).encode() + b"\n")
        return connection

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


class Stream:
    """One answer read on a thread: its deltas in order, and the event that ended it."""

    def __init__(self, host: Host, request: dict):
        self.connection = host.open(request)
        self.deltas: list[str] = []
        self.end: dict | None = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for line in self.connection.makefile("rb"):
                event = json.loads(line)
                if event["type"] == "delta":
                    self.deltas.append(event["text"])
                    self.first.set()
                else:
                    self.end = event
                    break
        except OSError:
            pass
        self.first.set()

    def wait(self, timeout=120) -> dict:
        self.thread.join(timeout)
        assert self.end is not None, "the answer never ended"
        return self.end

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def wire(content: str, **fields) -> dict:
    base = dict(kind="chat", model="smollm2", messages=({"role": "user", "content": content},), prompt="",
                max_tokens=24, temperature=0.0, top_p=1.0, stop=(), seed=None, stream=True, include_usage=False)
    return GenerationRequest(**(base | fields)).to_wire()


@pytest.fixture(scope="module")
def host(smollm2_model_path):
    running = Host(smollm2_model_path, parallel=4)
    yield running
    running.close()


QUESTIONS = ["Name a colour.", "What is 2 + 2?", "Say hello in French.", "Name a planet."]


def test_four_answers_at_once_are_decoded_together_and_each_answers_its_own_question(host):
    together = [Stream(host, wire(question, max_tokens=16)) for question in QUESTIONS]
    ends = [stream.wait() for stream in together]
    assert all(end["type"] == "finish" for end in ends), ends
    assert max(end["batch"]["widest"] for end in ends) == 4  # one step decoded all four
    french = together[QUESTIONS.index("Say hello in French.")].text
    assert "bonjour" in french.lower(), french  # its own prompt's answer, not another's
    # Each the one it gives alone, up to a near tie: tests/test_batch_near_ties.py.


def test_a_newcomer_s_long_prompt_is_evaluated_in_chunks_while_a_running_stream_goes_on(host):
    running = Stream(host, wire("Count from 1 to 200, one number per line.", max_tokens=400))
    assert running.first.wait(60)
    long_prompt = "Summarise this. " + " ".join(f"word{i}" for i in range(400))
    before = len(running.deltas)
    newcomer = Stream(host, wire(long_prompt, max_tokens=2))
    assert newcomer.first.wait(120)
    during = len(running.deltas) - before
    assert newcomer.wait()["type"] == "finish"
    # ~1700 prompt tokens in chunks of 256: the stream got a token with each chunk's step.
    assert during >= 6, f"the running stream got {during} tokens while the newcomer's prompt was read"
    running.connection.close()


def test_a_cancelled_answer_leaves_at_once_and_the_others_and_the_queue_go_on(host):
    streams = [Stream(host, wire(f"Count from {n} to 300.", max_tokens=300)) for n in range(4)]
    waiting = Stream(host, wire("Name a colour.", max_tokens=8))  # a fifth: it waits for a sequence
    assert streams[0].first.wait(60)
    streams[0].connection.close()  # its client went away
    assert waiting.wait()["type"] == "finish"  # it got the cancelled one's sequence
    assert all(stream.wait()["type"] == "finish" for stream in streams[1:])


def test_a_bad_request_among_good_ones_gets_its_error_and_harms_none(host):
    good = [Stream(host, wire(question)) for question in QUESTIONS[:2]]
    bad = socket.create_connection(("127.0.0.1", host.ready["port"]))
    bad.sendall(b'{"kind": "chat", "messages": 42}\n')
    reply = json.loads(bad.makefile("rb").readline())
    assert reply["type"] == "error" and reply["kind"] == "request"
    too_long = Stream(host, wire("word " * 3000))
    assert too_long.wait()["kind"] == "request"  # longer than one sequence's context
    assert all(stream.wait()["type"] == "finish" and stream.text for stream in good)


def test_a_tool_call_and_a_plain_answer_in_one_batch_each_keep_their_own_grammar(host):
    call = Stream(host, wire("Add 2 and 3.", tools=(ADD,), tool_choice="required", max_tokens=64))
    plain = Stream(host, wire("Name a planet.", max_tokens=16))
    call_end, plain_end = call.wait(), plain.wait()
    assert call_end["finish_reason"] == "tool_calls", call_end
    assert call_end["tool_calls"][0]["name"] == "add"
    assert set(json.loads(call_end["tool_calls"][0]["arguments"])) == {"a", "b"}
    assert plain_end["finish_reason"] in ("stop", "length") and "<tool_call>" not in plain.text


def test_a_repeated_prompt_reuses_its_cached_start_unless_it_is_seeded(host):
    conversation = "Here is a long story. " + "Once upon a time there was a fox. " * 40
    first = Stream(host, wire(conversation, max_tokens=4)).wait()
    again = Stream(host, wire(conversation + " What animal?", max_tokens=4)).wait()
    seeded = Stream(host, wire(conversation, max_tokens=4, seed=3)).wait()
    assert first["batch"]["reused"] < 40  # at most the chat template's start, cached from earlier tests
    assert again["batch"]["reused"] > 300  # the story was not evaluated again
    assert seeded["batch"]["reused"] == 0


def test_more_answers_than_sequences_wait_for_one_and_all_finish(smollm2_model_path):
    two = Host(smollm2_model_path, parallel=2)
    try:
        assert two.ready["parallel"] == 2 and two.ready["context"] == 2048
        streams = [Stream(two, wire(f"Count from {n} to 30.", max_tokens=12)) for n in range(5)]
        ends = [stream.wait() for stream in streams]
        assert all(end["type"] == "finish" and end["batch"]["widest"] <= 2 for end in ends), ends
    finally:
        two.close()


def test_every_sequence_filled_to_its_context_at_once_fits_the_shared_cache(smollm2_model_path):
    """The cache is one unified pool of parallel x context cells: each answer may use all of its
    own context while the others use theirs, and a slot reused after a long answer is trimmed
    first. A pool smaller than that, or an untrimmed slot, fails a llama_decode here."""
    small = subprocess.Popen(
        [sys.executable, "-m", "meshdesk.adapters.llama.host", "--model", str(smollm2_model_path),
         "--parallel", "2", "--threads", "2", "--context", "256"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    two = Host.__new__(Host)
    two.process, two.ready = small, json.loads(small.stdout.readline())
    try:
        story = "Tell me a very long story about a fox and a crow. " * 8
        rounds = [[Stream(two, wire(story + f"Part {n}.", max_tokens=400)) for n in range(2)] for _ in range(2)]
        for streams in rounds:
            ends = [stream.wait() for stream in streams]
            assert all(end["type"] == "finish" for end in ends), ends
            assert all(end["finish_reason"] in ("length", "stop") for end in ends), ends
        assert any(end["finish_reason"] == "length" for end in ends)  # an answer reached its context's end
    finally:
        two.close()


def test_a_stop_sequence_ends_its_own_answer_and_not_the_one_beside_it(host):
    counting = "Count from 1 to 20, separated by commas."
    stopped = Stream(host, wire(counting, stop=("7",), max_tokens=64))
    running = Stream(host, wire(counting, max_tokens=64))
    stopped_end, running_end = stopped.wait(), running.wait()
    assert max(stopped_end["batch"]["widest"], running_end["batch"]["widest"]) == 2  # in one batch
    assert stopped_end["finish_reason"] == "stop" and "7" not in stopped.text and "6" in stopped.text, stopped.text
    assert "7" in running.text, running.text  # the same count, past the other's stop
