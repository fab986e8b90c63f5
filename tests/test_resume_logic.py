"""Carrying an answer on after its host was lost: the pure continuation, and `node.resume`'s
wrapper against fake hosts (no sleeps: the clock is a parameter, changes are told)."""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.core.continuation import Progress, continuation, continued_prompt, token_budget
from meshdesk.core.openai_api import GenerationRequest, RequestError, parse_chat_request, parse_completion_request
from meshdesk.node.interfaces import HostLost, ModelUnavailable, UnknownModel
from meshdesk.node.resume import Changes, cut_when, resumed


def chat(**extra) -> GenerationRequest:
    return parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 50, "stream": True, **extra})


def completion_request() -> GenerationRequest:
    return parse_completion_request({"model": "m", "prompt": "Once", "max_tokens": 50})


# --- core.continuation -------------------------------------------------------------------------


def test_a_continuation_is_the_client_request_with_the_text_so_far():
    request = chat()
    carried = continuation(request, "Hello the")
    assert carried.continue_from == "Hello the"
    assert carried.messages == request.messages and carried.max_tokens == 50  # the child subtracts
    assert continuation(request, "") == request  # nothing streamed: the same request afresh
    with pytest.raises(ValueError):
        continuation(carried, "more")  # always from the client's request and the whole text


def test_the_continued_prompt_appends_the_text_so_far_to_the_rendered_prompt():
    assert continued_prompt("<start_of_turn>model\n", "Hi the") == "<start_of_turn>model\nHi the"
    assert continued_prompt("Once", None) == "Once"


@pytest.mark.parametrize("max_tokens, room, so_far, budget", [
    (50, 4000, 0, 50), (50, 4000, 20, 30), (50, 4000, 50, 0), (50, 4000, 60, 0),
    (None, 4000, 20, 4000), (50, 10, 20, 10), (50, 0, 0, 0)])
def test_the_token_budget_is_what_is_left_of_max_tokens_within_the_context(max_tokens, room, so_far, budget):
    assert token_budget(max_tokens, room, so_far) == budget


def test_progress_keeps_the_text_of_the_deltas_only():
    progress = Progress()
    for event in ({"type": "delta", "text": "a"}, {"type": "delta", "text": ""}, {"type": "delta"},
                  {"type": "delta", "text": "b"}, {"type": "finish", "finish_reason": "stop"}):
        progress.saw(event)
    assert progress.text == "ab"


def test_continue_from_crosses_the_mesh_but_is_never_read_from_an_http_body():
    carried = continuation(completion_request(), "upon a")
    assert GenerationRequest.from_wire(carried.to_wire()) == carried
    assert "continue_from" not in completion_request().to_wire()  # the old wire shape, unchanged
    for parse, body in ((parse_completion_request, {"model": "m", "prompt": "x"}),
                        (parse_chat_request, {"model": "m", "messages": [{"role": "user", "content": "x"}]})):
        with pytest.raises(RequestError) as refused:  # a field no client may send: a 400 naming it
            parse(body | {"continue_from": "injected"})
        assert refused.value.param == "continue_from"
    for bad in (5, ["x"], "x" * (4 * 1024 * 1024 + 1)):
        with pytest.raises(RequestError):
            GenerationRequest.from_wire(completion_request().to_wire() | {"continue_from": bad})


# --- node.resume, against fake hosts ------------------------------------------------------------


def delta(text: str) -> dict:
    return {"type": "delta", "text": text}


FINISH = {"type": "finish", "finish_reason": "length", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}


class FakeMesh:
    """Tries in order: each a list of events and maybe an exception after them."""

    def __init__(self, *tries):
        self.tries = list(tries)
        self.seen: list[tuple[GenerationRequest, frozenset]] = []

    async def attempt(self, request, avoid):
        self.seen.append((request, avoid))
        events, failure = self.tries.pop(0)
        for event in events:
            yield event
        if failure is not None:
            raise failure


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def collect(mesh: FakeMesh, changes=None, clock=None, bound: float = 60) -> list[dict]:
    return [event async for event in resumed(chat(), mesh.attempt, changes or Changes(), bound, clock)]


def test_a_host_lost_mid_answer_is_carried_on_with_one_stream_and_the_last_finish():
    mesh = FakeMesh(([delta("Hello"), delta(" the")], HostLost("link broke", "host-a", node_gone=True)),
                    ([], ModelUnavailable("not running")), ([delta(" world"), FINISH], None))
    events = asyncio.run(collect(mesh, clock=Clock()))
    assert events == [delta("Hello"), delta(" the"), delta(" world"), FINISH]  # one finish, the last


def test_the_answer_goes_on_with_the_text_so_far_and_never_to_the_node_that_went_away():
    mesh = FakeMesh(([delta("Hello"), delta(" the")], HostLost("link broke", "host-a", node_gone=True)),
                    ([], UnknownModel("not in the plan yet")),
                    ([delta(" wide")], HostLost("its child exited", "host-b", node_gone=False)),
                    ([delta(" world"), FINISH], None))
    events = asyncio.run(collect(mesh, clock=Clock()))
    assert events == [delta("Hello"), delta(" the"), delta(" wide"), delta(" world"), FINISH]
    requests = [request for request, _ in mesh.seen]
    assert [request.continue_from for request in requests] == [None, "Hello the", "Hello the", "Hello the wide"]
    # the node gone is avoided; a host whose model was lost stays eligible (it reloads solo)
    assert [avoid for _, avoid in mesh.seen] == [frozenset(), {"host-a"}, {"host-a"}, {"host-a"}]


@pytest.mark.parametrize("failure", [ModelUnavailable("loading"), UnknownModel("no such model"),
                                     RequestError("bad"), RuntimeError("our bug")])
def test_a_request_that_never_reached_a_host_fails_at_once_as_before(failure):
    mesh = FakeMesh(([], failure))
    with pytest.raises(type(failure)):
        asyncio.run(collect(mesh, clock=Clock()))
    assert len(mesh.seen) == 1


def test_an_error_that_is_not_a_lost_host_is_never_retried_even_mid_answer():
    mesh = FakeMesh(([delta("a")], HostLost("lost")), ([delta("b")], RequestError("the prompt is too long")))
    with pytest.raises(RequestError):
        asyncio.run(collect(mesh, clock=Clock()))
    assert len(mesh.seen) == 2


def test_between_tries_it_waits_for_a_change_and_gives_up_with_a_clear_error_after_the_bound():
    clock, waits = Clock(), []

    class TimedChanges(Changes):
        async def wait(self, timeout: float) -> None:
            waits.append(timeout)
            clock.now += timeout

    mesh = FakeMesh(([delta("a")], HostLost("link broke", "h", node_gone=True)),
                    *[([], ModelUnavailable("no host")) for _ in range(200)])
    with pytest.raises(ModelUnavailable, match=r"lost mid-answer .*within 2 s: no host"):
        asyncio.run(collect(mesh, TimedChanges(), clock, bound=2))
    assert sum(waits) == pytest.approx(2) and max(waits) <= 0.5
    assert len(mesh.seen) == 2 + len(waits)  # the first, one at once after the loss, one after each wait


def test_a_host_lost_again_and_again_waits_between_tries_and_the_bound_covers_the_whole_answer():
    """A host child that accepts and dies (a crash loop) must neither spin nor renew the bound."""
    clock, waits = Clock(), []

    class TimedChanges(Changes):
        async def wait(self, timeout: float) -> None:
            waits.append(timeout)
            clock.now += timeout

    mesh = FakeMesh(*[([delta("a")] if i == 0 else [], HostLost("its child exited", "h", node_gone=False))
                      for i in range(200)])
    with pytest.raises(ModelUnavailable, match=r"lost mid-answer .*within 2 s"):
        asyncio.run(collect(mesh, TimedChanges(), clock, bound=2))
    assert sum(waits) == pytest.approx(2) and max(waits) <= 0.5
    assert len(mesh.seen) <= 2 + len(waits)  # one try at once after the first loss, then one per wait


def test_a_change_wakes_the_wait_at_once():
    async def scenario():
        changes = Changes()
        mesh = FakeMesh(([delta("a")], HostLost("lost", "h", node_gone=True)), ([], ModelUnavailable("no")),
                        ([FINISH], None))
        events = resumed(chat(), mesh.attempt, changes, 60)
        assert await anext(events) == delta("a")
        waiting = asyncio.ensure_future(anext(events))
        while len(mesh.seen) < 2:  # the failed second try is done; it waits for news now
            await asyncio.sleep(0)
        changes.notify()
        assert await asyncio.wait_for(waiting, 0.4) == FINISH  # sooner than RETRY_SECONDS
    asyncio.run(scenario())


def test_a_client_that_goes_away_stops_the_try_and_nothing_is_retried():
    async def scenario():
        mesh = FakeMesh(([delta("a"), delta("b")], None))
        events = resumed(chat(), mesh.attempt, Changes(), 60)
        assert await anext(events) == delta("a")
        await events.aclose()
        assert len(mesh.seen) == 1
    asyncio.run(scenario())


def test_a_host_that_leaves_the_mesh_without_its_link_breaking_is_cut_off_and_closed():
    async def scenario():
        closed = asyncio.Event()

        async def stalls_after_one():
            try:
                yield delta("par")
                await asyncio.Event().wait()  # a machine gone: no byte, no close, ever
            finally:
                closed.set()
        gone = asyncio.Event()
        events = cut_when(stalls_after_one(), gone, lambda: HostLost("left the mesh", "h", node_gone=True))
        assert await anext(events) == delta("par")
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        assert not waiting.done()
        gone.set()  # the plans dropped the host
        with pytest.raises(HostLost, match="left the mesh"):
            await asyncio.wait_for(waiting, 1)
        assert closed.is_set()

    asyncio.run(scenario())


def test_a_cut_off_watch_passes_every_event_and_the_end_through():
    async def scenario():
        async def two():
            yield delta("a")
            yield FINISH
        return [event async for event in cut_when(two(), asyncio.Event(), lambda: HostLost("x"))]
    assert asyncio.run(scenario()) == [delta("a"), FINISH]


JSON_ANSWER = {"response_format": {"type": "json_object"}}


def test_an_answer_under_a_grammar_is_not_carried_on_from_its_text():
    """The new host's grammar would start over at the first character: the client is told to ask again."""
    for extra in (JSON_ANSWER, {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}):
        request = chat(**extra)
        mesh = FakeMesh(([delta('{"a"')], HostLost("link broke", "host-a", node_gone=True)), ([FINISH], None))
        with pytest.raises(ModelUnavailable, match="cannot be carried on from its text") as raised:
            asyncio.run(_collect_events(request, mesh))
        assert not isinstance(raised.value, HostLost) and len(mesh.seen) == 1


def test_an_answer_under_a_grammar_lost_before_any_text_starts_again_on_the_new_host():
    request = chat(**JSON_ANSWER)
    mesh = FakeMesh(([], HostLost("its child exited", "host-a", node_gone=False)), ([delta("{}"), FINISH], None))
    assert asyncio.run(_collect_events(request, mesh)) == [delta("{}"), FINISH]
    assert [seen.continue_from for seen, _ in mesh.seen] == [None, None]


def test_a_tool_answer_without_a_grammar_is_carried_on_as_before():
    request = chat(tools=[{"type": "function", "function": {"name": "f"}}])  # "auto": free text, calls held back
    mesh = FakeMesh(([delta("Let me")], HostLost("link broke", "host-a", node_gone=True)),
                    ([delta(" see."), FINISH], None))
    assert asyncio.run(_collect_events(request, mesh)) == [delta("Let me"), delta(" see."), FINISH]
    assert mesh.seen[1][0].continue_from == "Let me" and mesh.seen[1][0].tools == request.tools


async def _collect_events(request, mesh) -> list[dict]:
    return [event async for event in resumed(request, mesh.attempt, Changes(), 60, Clock())]
