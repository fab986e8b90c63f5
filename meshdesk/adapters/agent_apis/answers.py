"""One answer from the node's gateway, for the routes of this package: the first event awaited
(so a failure before any output still gets its own status line), the rest collected whole or
relayed as named server-sent events (`event: NAME`, `data: JSON`), the way the Responses and
Anthropic Messages APIs stream. The shaping is pure (`core.responses_api`, `core.anthropic_api`);
this only writes what it returns."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web

from meshdesk.core.openai_api import GenerationRequest, RequestError
from meshdesk.core.openai_api.tools import checked_finish
from meshdesk.core.responses_api import named_sse_event
from meshdesk.node.interfaces import Gateway, ModelUnavailable

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
Event = tuple[str, dict]


class AnswerFailed(Exception):
    """The model host failed on our side (or answered what cannot be shaped): a 500."""


class Shaper(Protocol):
    def opening(self) -> list[Event]: ...
    def delta(self, text: str) -> list[Event]: ...
    def finish(self, finish: dict) -> list[Event]: ...


def raise_if_error(event: dict) -> None:
    if event.get("type") != "error":
        return
    message = str(event.get("message", "model host error"))
    if event.get("kind") == "request":
        raise RequestError(message, code="invalid_prompt")
    raise AnswerFailed(message)


def checked(request: GenerationRequest, event: dict) -> dict:
    """A finish event checked as chat checks it (`checked_finish`): calls with ids, the first
    only without parallel_tool_calls; a malformed one fails the answer (a server error, or the
    stream's error event), never a half-shaped answer."""
    if event.get("type") != "finish":
        return event
    try:
        return checked_finish(event, request.parallel_tool_calls, lambda: f"call_{secrets.token_hex(12)}")
    except ValueError as error:
        raise AnswerFailed(str(error)) from None


async def _checked_events(request: GenerationRequest, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
    try:
        async for event in events:
            yield checked(request, event)
    finally:
        await events.aclose()


async def answer_events(gateway: Gateway, request: GenerationRequest) -> tuple[dict, AsyncIterator[dict]]:
    """(first event, the rest), finish events checked (`checked`); the caller closes the rest."""
    events = gateway.generate(request)
    try:
        first = checked(request, await anext(events))
        raise_if_error(first)
    except BaseException:
        await events.aclose()
        raise
    return first, _checked_events(request, events)


async def collect(first_event: dict, events: AsyncIterator[dict]) -> tuple[str, dict]:
    """The whole text and the finishing event."""
    parts: list[str] = []
    event = first_event
    while True:
        raise_if_error(event)
        if event["type"] == "finish":
            return "".join(parts), event
        parts.append(event.get("text", ""))
        event = await anext(events)


def broken_off(error: Exception) -> bool:
    """Whether `error` is an answer failing on the way, rather than a bug of ours."""
    return isinstance(error, (ModelUnavailable, RequestError, AnswerFailed, ValueError))


async def relay(http_request: web.Request, shaper: Shaper, first_event: dict, events: AsyncIterator[dict],
                failure: Callable[[Exception], list[Event]]) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(http_request)

    async def send(pairs: list[Event]) -> None:
        for name, payload in pairs:
            await response.write(named_sse_event(name, payload))

    await send(shaper.opening())
    event = first_event
    try:
        while True:
            raise_if_error(event)
            if event["type"] == "finish":
                last = shaper.finish(event)
                break
            await send(shaper.delta(event.get("text", "")))
            event = await anext(events)
    except Exception as error:
        if not broken_off(error):
            raise
        last = failure(error)  # the status line is long gone: the stream's own error event
    finally:
        await events.aclose()  # the answer lets go of its host before the client hears it is over
    await send(last)
    await response.write_eof()
    return response
