"""Requests for a model on another node, across an in-memory link pair instead of the mesh."""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.core.openai_api import GenerationRequest, RequestError
from meshdesk.node.api_tunnel import API_PURPOSE, RemoteModel, raise_remote_error, serve_remote_request
from meshdesk.node.interfaces import HostLost, LinkClosed, ModelUnavailable, UnknownModel
from tests.fakes import chat_request, eventually, link_pair, run, within

EVENTS = [{"type": "delta", "text": "Hel"}, {"type": "delta", "text": "lo"},
          {"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": 4, "completion_tokens": 2}}]


class HostingNode:
    """The far end: serve_remote_request on every link opened to it, over a local generator."""

    def __init__(self, generate):
        self.generate = generate
        self.opened: list[tuple[str, str]] = []
        self.links = []
        self.serving: list[asyncio.Task] = []

    async def open_link(self, host_id: str, purpose: str):
        self.opened.append((host_id, purpose))
        near, far = link_pair(("requesting", "hosting"))
        self.links.append((near, far))
        self.serving.append(asyncio.ensure_future(serve_remote_request(far, self.generate)))
        return near

    async def served(self) -> None:
        await within(asyncio.gather(*self.serving))


def local_generator(events=EVENTS, received=None):
    async def generate(request: GenerationRequest):
        if received is not None:
            received.append(request)
        for event in events:
            yield event
    return generate


async def collect(model: RemoteModel, request: GenerationRequest) -> list[dict]:
    return [event async for event in model.generate(request)]


def test_a_relayed_request_gives_the_events_of_the_local_generator():
    async def scenario():
        received = []
        hosting = HostingNode(local_generator(received=received))
        model = RemoteModel("tiny", "host-node", hosting.open_link)
        request = chat_request("hello there")
        assert await collect(model, request) == [event async for event in local_generator()(request)]
        assert received == [request]  # the request arrives intact, through its wire form
        assert hosting.opened == [("host-node", API_PURPOSE)]
        await hosting.served()
        near, far = hosting.links[0]
        assert near.closed and far.closed

    run(scenario())


def test_an_error_event_ends_the_stream_after_the_events_before_it():
    async def scenario():
        events = [{"type": "delta", "text": "a"}, {"type": "error", "message": "context full"},
                  {"type": "delta", "text": "never sent"}]
        hosting = HostingNode(local_generator(events))
        model = RemoteModel("tiny", "host-node", hosting.open_link)
        assert await collect(model, chat_request("x")) == events[:2]

    run(scenario())


@pytest.mark.parametrize("message", [
    {"type": "generate", "request": "not an object"},
    {"type": "generate", "request": {"kind": "embedding", "model": "tiny"}},
    {"type": "generate"},
    ["not", "a", "message"],
])
def test_a_malformed_request_gets_a_request_error_event(message):
    async def scenario():
        asked = []
        near, far = link_pair()
        serving = asyncio.ensure_future(serve_remote_request(far, local_generator(received=asked)))
        await near.send(message)
        event = await within(near.receive())
        assert event["type"] == "error" and event["kind"] == "request"
        assert event["message"].startswith("bad forwarded request")
        with pytest.raises(LinkClosed):
            await within(near.receive())
        await within(serving)
        assert asked == []

    run(scenario())


def test_a_request_error_on_the_host_surfaces_as_an_error_event_to_the_requester():
    async def scenario():
        async def refusing(request):
            raise RequestError("'max_tokens' is over the context size")
            yield  # an async generator, like the node's

        hosting = HostingNode(refusing)
        model = RemoteModel("tiny", "host-node", hosting.open_link)
        [event] = await collect(model, chat_request("x"))
        assert (event["type"], event["kind"]) == ("error", "request")
        assert "over the context size" in event["message"]

    run(scenario())


def test_an_unavailable_model_there_is_unavailable_here_with_the_same_retry_delay():
    async def scenario():
        async def loading(request):
            raise ModelUnavailable("model tiny is loading; try again shortly", retry_after=7)
            yield

        model = RemoteModel("tiny", "host-node", HostingNode(loading).open_link)
        with pytest.raises(ModelUnavailable, match="is loading") as raised:
            await collect(model, chat_request("x"))
        assert raised.value.retry_after == 7

    run(scenario())


def test_an_unknown_model_there_is_unknown_here():
    async def scenario():
        async def unknown(request):
            raise UnknownModel("no model named tiny here")
            yield

        model = RemoteModel("tiny", "host-node", HostingNode(unknown).open_link)
        with pytest.raises(UnknownModel, match="no model named tiny"):
            await collect(model, chat_request("x"))

    run(scenario())


def test_a_host_that_cannot_be_reached_is_unavailable():
    async def scenario():
        async def no_route(host_id, purpose):
            raise LinkClosed("no path to host-node")

        with pytest.raises(ModelUnavailable, match="cannot reach the host of tiny"):
            await collect(RemoteModel("tiny", "host-node", no_route), chat_request("x"))

    run(scenario())


def test_a_host_link_closing_mid_stream_ends_the_stream_with_a_retryable_error():
    async def scenario():
        release = asyncio.Event()

        async def stalls_after_one(request):
            yield {"type": "delta", "text": "par"}
            await release.wait()
            yield {"type": "finish", "finish_reason": "stop", "usage": {}}

        hosting = HostingNode(stalls_after_one)
        model = RemoteModel("tiny", "host-node", hosting.open_link)
        received = []
        with pytest.raises(HostLost, match="went away mid-answer") as caught:
            async for event in model.generate(chat_request("x")):
                received.append(event)
                hosting.links[0][1].close("hosting node stopped")
        assert received == [{"type": "delta", "text": "par"}]
        assert hosting.links[0][0].closed
        # the node is gone: the gateway carries the answer on elsewhere, never there
        assert (caught.value.host_id, caught.value.node_gone) == ("host-node", True)

    run(scenario())


def test_malformed_bytes_from_the_host_end_the_stream_with_a_retryable_error():
    async def scenario():
        release = asyncio.Event()

        async def stalls(request):
            await release.wait()
            yield {"type": "delta", "text": "never"}

        hosting = HostingNode(stalls)
        model = RemoteModel("tiny", "host-node", hosting.open_link)
        generation = asyncio.ensure_future(collect(model, chat_request("x")))
        await eventually(lambda: hosting.links)
        hosting.links[0][0].deliver_malformed()
        with pytest.raises(ModelUnavailable, match="went away mid-answer"):
            await within(generation)

    run(scenario())


def test_a_requester_that_goes_away_stops_the_generation_on_the_host():
    async def scenario():
        stopped = asyncio.Event()

        async def endless(request):
            try:
                while True:
                    yield {"type": "delta", "text": "more"}
            finally:
                stopped.set()

        hosting = HostingNode(endless)
        model = RemoteModel("tiny", "host-node", hosting.open_link)
        stream = model.generate(chat_request("x"))
        assert await stream.__anext__() == {"type": "delta", "text": "more"}
        await stream.aclose()  # the API client hung up
        assert hosting.links[0][0].closed
        await hosting.served()  # the hosting end returns quietly...
        await within(stopped.wait())  # ...and its generation is closed, not left running
        assert hosting.links[0][1].closed

    run(scenario())


def test_a_host_that_loses_its_model_mid_answer_says_lost_and_the_requester_carries_it_on():
    async def scenario():
        async def child_exits_after_one(request):
            yield {"type": "delta", "text": "par"}
            raise HostLost("model host for tiny stopped mid-answer")

        hosting = HostingNode(child_exits_after_one)
        model = RemoteModel("tiny", "host-node", hosting.open_link)
        received = []
        with pytest.raises(HostLost, match="stopped mid-answer") as caught:
            async for event in model.generate(chat_request("x")):
                received.append(event)
        assert received == [{"type": "delta", "text": "par"}]
        # the node is alive and may host the model again (solo, once the plans change)
        assert (caught.value.host_id, caught.value.node_gone) == ("host-node", False)
        await hosting.served()

    run(scenario())


@pytest.mark.parametrize("event, raised, retry_after", [
    ({"type": "error", "kind": "unavailable", "message": "busy", "retry_after": 9}, ModelUnavailable, 9),
    ({"type": "error", "kind": "unavailable", "message": "busy", "retry_after": "9"}, ModelUnavailable, 2),
    ({"type": "error", "kind": "unavailable"}, ModelUnavailable, 2),
    ({"type": "error", "kind": "unknown", "message": "no such model"}, UnknownModel, None),
    ({"type": "error", "kind": "lost", "message": "model host exited"}, HostLost, 2),
    ({"type": "error", "kind": "request", "message": "bad"}, None, None),  # passed on as an event
    ({"type": "error", "kind": "something new"}, None, None),
])
def test_remote_error_kinds(event, raised, retry_after):
    if raised is None:
        raise_remote_error(event)
        return
    with pytest.raises(raised) as caught:
        raise_remote_error(event)
    if retry_after is not None:
        assert caught.value.retry_after == retry_after


def test_a_remote_error_message_is_cut_to_a_sane_length():
    with pytest.raises(UnknownModel) as caught:
        raise_remote_error({"type": "error", "kind": "unknown", "message": "x" * 5000})
    assert len(str(caught.value)) == 1000


def test_a_bug_on_the_hosting_node_is_reported_as_its_own_failure_not_the_requester_mistake():
    async def broken_generator(request: GenerationRequest):
        raise TypeError("our own bug")
        yield  # pragma: no cover

    async def scenario():
        near, far = link_pair()
        serving = asyncio.ensure_future(serve_remote_request(far, broken_generator))
        await near.send({"type": "generate", "request": chat_request("hi").to_wire()})
        event = await within(near.receive())
        assert event["type"] == "error" and event["kind"] == "server"
        assert "our own bug" not in event["message"]  # internals stay in the host's log
        await within(serving)
    run(scenario())
