"""`POST /v1/messages` and `/v1/messages/count_tokens`, Anthropic's Messages API. Its errors
leave in Anthropic's shape, so Anthropic's clients (Claude Code with ANTHROPIC_BASE_URL) read
them: each handler maps them itself, inside the server's OpenAI-shaped middleware. The access
policy's refusals (a wrong key, a foreign Origin) come before any handler and keep OpenAI's
shape; their status says the same."""

from __future__ import annotations

import secrets

from aiohttp import web

from meshdesk.adapters.agent_apis.answers import AnswerFailed, answer_events, collect, relay
from meshdesk.core import openai_api
from meshdesk.core.anthropic_api import OVERLOADED, MessageEvents, error_body, parse_messages_request, whole_message
from meshdesk.core.openai_api import RequestError
from meshdesk.node.interfaces import Gateway, ModelBusy, ModelUnavailable, UnknownModel

FAILURES = (RequestError, UnknownModel, ModelUnavailable, AnswerFailed, ValueError, web.HTTPException)


def anthropic_error(status: int, message: str, **headers) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers or None)


def failure_of(error: Exception) -> tuple[int, str, dict]:
    """(status, message, headers) for a failure, as Anthropic's API would answer it."""
    if isinstance(error, RequestError):
        return error.status, error.message, {}
    if isinstance(error, UnknownModel):
        return 404, str(error), {}
    if isinstance(error, ModelBusy):  # 429 rate_limit_error: Anthropic's SDKs back off and retry
        return 429, str(error), {"Retry-After": str(error.retry_after)}
    if isinstance(error, ModelUnavailable):
        return OVERLOADED, str(error), {"Retry-After": str(error.retry_after)}
    if isinstance(error, web.HTTPException):
        return error.status, error.reason, {}
    return 500, str(error) or "model host error", {}


def in_anthropic_shape(handler):
    async def handle(self, http_request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, http_request)
        except FAILURES as error:
            if isinstance(error, web.HTTPException) and error.status < 400:
                raise
            status, message, headers = failure_of(error)
            return anthropic_error(status, message, **headers)
    return handle


class MessagesRoutes:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.create)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)

    @in_anthropic_shape
    async def create(self, http_request: web.Request) -> web.StreamResponse:
        request = parse_messages_request(openai_api.parse_json_body(await http_request.read()))
        first, events = await answer_events(self.gateway, request)
        token = secrets.token_hex(12)
        try:
            if request.stream:
                shaper = MessageEvents(token, request.model)
                return await relay(http_request, shaper, first, events,
                                   lambda error: shaper.failure(*failure_of(error)[:2]))
            text, finish = await collect(first, events)
            return web.json_response(whole_message(token, request.model, text, finish))
        finally:
            await events.aclose()

    @in_anthropic_shape
    async def count_tokens(self, http_request: web.Request) -> web.Response:
        """The prompt's tokens as the model reads them: a one-token answer's `prompt_tokens`."""
        request = parse_messages_request(openai_api.parse_json_body(await http_request.read()), counting=True)
        first, events = await answer_events(self.gateway, request)
        try:
            _, finish = await collect(first, events)
        finally:
            await events.aclose()
        return web.json_response({"input_tokens": int((finish.get("usage") or {}).get("prompt_tokens", 0))})
