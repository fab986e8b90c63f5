"""The node's side of a model host: announcements, states, one generation at a time, restarts.

The child is a fake process; its generation port is a real 127.0.0.1 server run by the test,
which hands each connection over so the test decides what the "model" answers and when.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from meshdesk.node.child_process import Backoff
from meshdesk.node.interfaces import HostLost, ModelUnavailable
from meshdesk.node.model_host import ModelHost
from tests.fakes import Loopback, ManualClock, ProcessStarter, chat_request, eventually, run, run_on_loopback, within

FINISH = {"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


class GenerationPort:
    """The model host child's 127.0.0.1 port: each connection arrives with its request line."""

    def __init__(self, loopback: Loopback):
        self.loopback = loopback
        self.arrivals: asyncio.Queue = asyncio.Queue()

    async def start(self) -> int:
        return await self.loopback.listen(self._accepted)

    async def _accepted(self, reader, writer) -> None:
        request = json.loads(await reader.readline())
        await self.arrivals.put(Answer(request, reader, writer))

    async def next(self, timeout: float = 2.0) -> Answer:
        return await asyncio.wait_for(self.arrivals.get(), timeout)

    async def none_arrives(self) -> bool:
        """True if no connection arrives within a short while (for asserting that one must wait)."""
        try:
            await asyncio.wait_for(self._peek(), 0.05)
        except asyncio.TimeoutError:
            return True
        return False

    async def _peek(self) -> None:
        while self.arrivals.empty():
            await asyncio.sleep(0.002)


class Answer:
    def __init__(self, request: dict, reader, writer):
        self.request, self.reader, self.writer = request, reader, writer

    @property
    def text(self) -> str:
        return self.request["messages"][0]["content"]

    async def send(self, *events: dict) -> None:
        for event in events:
            self.writer.write(json.dumps(event).encode() + b"\n")
        await self.writer.drain()

    async def finish(self, text: str, **finish) -> None:
        await self.send({"type": "delta", "text": text}, {**FINISH, **finish})
        await self.reader.read()  # the node closes its end once it has the finish
        self.writer.close()


class Host:
    """A ModelHost on fake processes and fake sleep, running in the background."""

    def __init__(self, tmp_path: Path, backoff: Backoff = Backoff()):
        self.starter = ProcessStarter()
        self.clock = ManualClock()
        self.host = ModelHost("tiny", tmp_path / "tiny.gguf", ["model-host", "tiny.gguf"], tmp_path / "host.log",
                              backoff, start_process=self.starter, sleep=self.clock.sleep)
        self.changes: list[tuple[str, str | None]] = []
        self.host.on_change = lambda: self.changes.append((self.host.state, self.host.error))
        self.task = asyncio.ensure_future(self.host.run())

    async def ready(self, port: int, **announced):
        process = await self.starter.next_process()
        process.announce({"event": "ready", "port": port, **announced})
        await eventually(lambda: self.host.status().state == "ready")
        return process

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def collect(host: ModelHost, text: str) -> list[dict]:
    return [event async for event in host.generate(chat_request(text))]


def test_ready_announcement_makes_the_host_ready_with_its_pid(tmp_path):
    async def scenario():
        harness = Host(tmp_path)
        process = await harness.starter.next_process()
        status = harness.host.status()
        assert (status.id, status.path, status.state, status.pid) == ("tiny", str(tmp_path / "tiny.gguf"),
                                                                        "loading", None)
        assert harness.starter.calls[0][0] == ("model-host", "tiny.gguf")
        process.announce({"event": "ready", "port": 41000})
        await eventually(lambda: harness.host.status().state == "ready")
        status = harness.host.status()
        assert (status.state, status.error, status.pid, harness.host.port) == ("ready", None, process.pid, 41000)
        assert harness.changes == [("loading", None), ("ready", None)]
        await harness.stop()

    run(scenario())


@pytest.mark.parametrize("first_line", [
    {"event": "ready", "port": "41000"},
    {"event": "ready"},
    {"event": "progress", "percent": 40},
])
def test_the_host_child_announces_once_and_anything_but_ready_or_failed_leaves_it_loading(tmp_path, first_line):
    async def scenario():
        harness = Host(tmp_path)
        process = await harness.starter.next_process()
        process.announce(first_line)
        process.announce({"event": "ready", "port": 41000})  # too late: only the first line counts
        with pytest.raises(ModelUnavailable) as raised:
            await collect(harness.host, "hello")
        assert raised.value.retry_after == 2 and "loading" in str(raised.value)
        process.exit(0)
        await harness.starter.next_process()
        assert harness.changes == [("loading", None), ("loading", "model host exited with code 0; restarting"),
                                   ("loading", None)]
        await harness.stop()

    run(scenario())


def test_a_failed_announcement_fails_the_model_for_good(tmp_path):
    async def scenario():
        harness = Host(tmp_path)
        process = await harness.starter.next_process()
        process.announce({"event": "failed", "message": "llama_model_load: invalid magic"})
        await eventually(lambda: harness.host.status().state == "failed")
        process.exit(1)
        await within(harness.task)  # no restart: the same file would fail again
        status = harness.host.status()
        assert (status.state, status.error) == ("failed", "llama_model_load: invalid magic")
        assert len(harness.starter.calls) == 1 and harness.clock.sleeps == []
        with pytest.raises(ModelUnavailable) as raised:
            await collect(harness.host, "hello")
        assert raised.value.retry_after == 30 and "invalid magic" in str(raised.value)

    run(scenario())


def test_a_crash_restarts_the_host_with_growing_delays(tmp_path):
    async def scenario():
        harness = Host(tmp_path, Backoff(first=0.5, longest=2.0))
        first = await harness.ready(41001)
        first.exit(-6)
        second = await harness.starter.next_process()
        status = harness.host.status()
        assert (status.state, status.pid, harness.host.port) == ("loading", None, None)
        assert harness.changes == [("loading", None), ("ready", None),
                                   ("loading", "model host exited with code -6; restarting"), ("loading", None)]
        second.exit(-6)  # dies while loading
        third = await harness.starter.next_process()
        third.exit(-6)
        fourth = await harness.starter.next_process()
        assert harness.clock.sleeps == [0.5, 1.0, 2.0]
        fourth.announce({"event": "ready", "port": 41002})
        await eventually(lambda: harness.host.status().state == "ready")
        assert harness.host.status().pid == fourth.pid and harness.host.status().error is None
        await harness.stop()

    run(scenario())


def test_generations_run_one_at_a_time_in_arrival_order(tmp_path):
    async def scenario(loopback):
        port = GenerationPort(loopback)
        harness = Host(tmp_path)
        await harness.ready(await port.start())
        first, second, third = (asyncio.ensure_future(collect(harness.host, text)) for text in ("a", "b", "c"))
        answer = await port.next()
        for expected in ("a", "b", "c"):
            assert answer.text == expected
            assert await port.none_arrives()  # the next request waits for this one to end
            await answer.finish(expected.upper())
            if expected != "c":
                answer = await port.next()
        results = await within(asyncio.gather(first, second, third))
        assert [[event.get("text") for event in events] for events in results] == [["A", None], ["B", None],
                                                                                    ["C", None]]
        assert harness.host.status().requests == 3
        await harness.stop()

    run_on_loopback(scenario)


def test_a_generation_yields_the_host_events_and_sends_the_request_as_one_line(tmp_path):
    async def scenario(loopback):
        port = GenerationPort(loopback)
        harness = Host(tmp_path)
        await harness.ready(await port.start())
        generation = asyncio.ensure_future(collect(harness.host, "hi there"))
        answer = await port.next()
        assert answer.request == chat_request("hi there").to_wire()
        await answer.finish("Hello")
        assert await within(generation) == [{"type": "delta", "text": "Hello"}, FINISH]
        await harness.stop()

    run_on_loopback(scenario)


def test_an_error_event_ends_the_generation(tmp_path):
    async def scenario(loopback):
        port = GenerationPort(loopback)
        harness = Host(tmp_path)
        await harness.ready(await port.start())
        generation = asyncio.ensure_future(collect(harness.host, "x"))
        answer = await port.next()
        await answer.send({"type": "error", "message": "context full"}, {"type": "delta", "text": "never"})
        assert await within(generation) == [{"type": "error", "message": "context full"}]
        await harness.stop()

    run_on_loopback(scenario)


def test_a_host_that_stops_mid_answer_is_a_retryable_unavailability(tmp_path):
    async def scenario(loopback):
        port = GenerationPort(loopback)
        harness = Host(tmp_path)
        await harness.ready(await port.start())
        received = []

        async def generate():
            async for event in harness.host.generate(chat_request("x")):
                received.append(event)

        generation = asyncio.ensure_future(generate())
        answer = await port.next()
        await answer.send({"type": "delta", "text": "par"})
        answer.writer.close()
        with pytest.raises(HostLost, match="stopped mid-answer"):  # the gateway carries it on
            await within(generation)
        assert received == [{"type": "delta", "text": "par"}]
        # the queue is free again for the next request
        following = asyncio.ensure_future(collect(harness.host, "y"))
        await (await port.next()).finish("ok")
        assert (await within(following))[0] == {"type": "delta", "text": "ok"}
        await harness.stop()

    run_on_loopback(scenario)


def test_an_unreachable_port_is_a_retryable_unavailability(tmp_path):
    async def scenario():
        harness = Host(tmp_path)
        await harness.ready(closed_port())
        with pytest.raises(ModelUnavailable, match="not reachable"):
            await collect(harness.host, "x")
        assert harness.host.status().requests == 0  # a request that never reached the host does not count
        await harness.stop()

    run(scenario())


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on: one the system just handed out and took back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_queued_generation_is_refused_once_the_host_crashes(tmp_path):
    async def scenario(loopback):
        port = GenerationPort(loopback)
        harness = Host(tmp_path)
        process = await harness.ready(await port.start())
        first = asyncio.ensure_future(collect(harness.host, "a"))
        waiting = asyncio.ensure_future(collect(harness.host, "b"))
        answer = await port.next()
        process.exit(-9)
        await eventually(lambda: harness.host.status().state == "loading")
        answer.writer.close()
        with pytest.raises(ModelUnavailable):
            await within(first)
        with pytest.raises(ModelUnavailable, match="loading"):
            await within(waiting)
        await harness.stop()

    run_on_loopback(scenario)


def test_speculative_counts_add_up_across_generations(tmp_path):
    async def scenario(loopback):
        port = GenerationPort(loopback)
        harness = Host(tmp_path)
        await harness.ready(await port.start(), draft="draft.gguf", draft_max=8)
        assert harness.host.status().draft == "draft.gguf"
        counts = [{"proposed": 10, "accepted": 5, "steps": 4, "generated": 9},
                  {"proposed": 6, "accepted": 3, "steps": 2, "generated": 5, "junk": 1},
                  {"proposed": -1, "accepted": True, "steps": "2"}]
        for speculative in counts:
            generation = asyncio.ensure_future(collect(harness.host, "x"))
            await (await port.next()).finish("t", speculative=speculative)
            await within(generation)
        assert harness.host.status().speculative == {
            "proposed": 16, "accepted": 8, "steps": 6, "generated": 14, "backed_off": 0, "mode": "draft",
            "draft_max": 8, "acceptance_rate": 0.5, "tokens_per_step": round(14 / 6, 3),
            "tokens_per_round_trip": None}
        await harness.stop()

    run_on_loopback(scenario)


def test_a_draft_that_could_not_start_is_reported(tmp_path):
    async def scenario():
        harness = Host(tmp_path)
        await harness.ready(1, draft_error="draft vocabulary differs")
        status = harness.host.status()
        assert status.draft is None and status.speculative == {"error": "draft vocabulary differs"}
        await harness.stop()

    run(scenario())


def test_the_turn_is_given_back_when_the_finish_arrives_though_the_caller_stops_reading_there(tmp_path):
    async def scenario(loopback):
        port = GenerationPort(loopback)
        harness = Host(tmp_path)
        await harness.ready(await port.start())
        events = harness.host.generate(chat_request("hi"))  # held, as a route handler holds it
        first = asyncio.ensure_future(events.__anext__())
        answer = await port.next()
        await answer.send({"type": "delta", "text": "Hello"}, FINISH)
        assert (await within(first))["text"] == "Hello"
        assert harness.host.status().generating == 1
        assert (await within(events.__anext__()))["type"] == "finish"  # and the caller reads no more
        assert harness.host.status().generating == 0  # while the generator is still referenced
        await harness.stop()
        await events.aclose()

    run_on_loopback(scenario)
