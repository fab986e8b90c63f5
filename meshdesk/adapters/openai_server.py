"""The OpenAI-compatible HTTP API on 127.0.0.1 (aiohttp), in front of the node's gateway."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import web

from meshdesk.core import openai_api as api
from meshdesk.core.invite import MAX_DURATION_SECONDS
from meshdesk.core.local_api_policy import ApiAccess, Decision, judge
from meshdesk.core.openai_api import GenerationRequest, RequestError, Usage
from meshdesk.core.openai_api.errors import describe
from meshdesk.core.openai_api.tools import checked_finish
from meshdesk.node.interfaces import Gateway, ModelBusy, ModelUnavailable, UnknownModel

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_INVITE_SECONDS = 7 * 24 * 3600


def error_response(status: int, message: str, type: str, code: str | None = None, **headers) -> web.Response:
    body = api.error_body(message, type=type, code=code)
    return web.json_response(body, status=status, headers=headers or None)


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure leaves in OpenAI's error shape, whatever raised it."""
    try:
        return await handler(request)
    except RequestError as error:
        return web.json_response(error.to_body(), status=error.status)
    except UnknownModel as error:
        return error_response(404, str(error), "invalid_request_error", "model_not_found")
    except ModelBusy as error:  # OpenAI's rate-limit shape: its SDKs back off and retry
        return error_response(429, str(error), "requests", "rate_limit_exceeded",
                              **{"Retry-After": str(error.retry_after)})
    except ModelUnavailable as error:
        return error_response(503, str(error), "service_unavailable", "model_unavailable",
                              **{"Retry-After": str(error.retry_after)})
    except GenerationFailed as error:
        return error_response(500, str(error), "server_error")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_response(error.status, error.reason, http_error_type(error.status))


def http_error_type(status: int) -> str:
    return {404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large"}.get(
        status, "invalid_request_error")


class AccessGuard:
    """Carries out `core.local_api_policy.judge` on each request; `port()` is the bound port."""

    def __init__(self, access: ApiAccess, port):
        self.access = access
        self.port = port

    def decide(self, request: web.BaseRequest) -> Decision:
        return judge(request.method, request.rel_url.path_safe, request.headers.items(), self.port(),
                     self.access)

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        decision = self.decide(request)
        if decision.refusal is not None:
            refusal = decision.refusal
            log.info("API refused %s %r: %s", request.method, request.rel_url.path_safe[:80], refusal.code)
            return error_response(refusal.status, refusal.message, refusal.type, refusal.code,
                                  **dict(refusal.headers))
        if decision.preflight:
            return web.Response(status=204)
        return await handler(request)

    async def add_cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Before any answer goes out, streamed ones included: what an allowed origin gets."""
        for name, value in self.decide(request).cors_headers:
            response.headers[name] = value


class OpenAiServer:
    def __init__(self, gateway: Gateway, access: ApiAccess, routes=()):
        self.gateway = gateway
        self.access = access
        self.routes = routes  # more endpoints, each `add_routes(app, gateway)`: adapters cannot import each other
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    def application(self) -> web.Application:
        guard = AccessGuard(self.access, lambda: self.port)
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[guard.middleware, openai_errors])
        app.on_response_prepare.append(guard.add_cors_headers)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        for add_routes in self.routes:
            add_routes(app, self.gateway)
        app.router.add_get("/api/status", self.node_status)
        app.router.add_post("/api/invite", self.invite)
        app.router.add_get("/api/invite", self.invite_by_get)
        app.router.add_post("/api/revoke", self.revoke)
        app.router.add_post("/api/remove", self.remove)
        app.router.add_post("/api/admin", self.make_admin)
        app.router.add_post("/api/capacity", self.capacity)
        app.router.add_post("/api/serve", self.serve)
        app.router.add_post("/api/drop", self.drop)
        app.router.add_post("/api/name", self.rename)
        return app

    async def start(self, port: int, host: str = "127.0.0.1") -> int:
        self.runner = web.AppRunner(self.application(), handler_cancellation=True, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def list_models(self, request: web.Request) -> web.Response:
        ids = [status.id for status in self.gateway.model_statuses()]
        return web.json_response(api.models_list(ids, created=int(time.time())))

    async def node_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.gateway.status().to_wire())

    async def invite(self, request: web.Request) -> web.Response:
        """{"expires_in": seconds, 0 for never} (default 7 days): a new invite, as a POST so
        that no page can mint one by loading a URL."""
        body = api.parse_json_body(await request.read())
        expires_in = body.get("expires_in", DEFAULT_INVITE_SECONDS)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) \
                or not 0 <= expires_in <= MAX_DURATION_SECONDS:
            raise RequestError(f"'expires_in' must be whole seconds from 1 to {MAX_DURATION_SECONDS}, "
                               f"or 0 for never, not {describe(expires_in)}", param="expires_in")
        try:
            return web.json_response(self.gateway.mint_invite(expires_in))
        except ValueError as error:
            raise RequestError(str(error), param="expires_in") from None

    async def invite_by_get(self, request: web.Request) -> web.Response:
        return error_response(405, "invites are minted with POST /api/invite and a JSON body "
                              '{"expires_in": SECONDS} (0 for never); GET no longer mints them',
                              "invalid_request_error", "method_not_allowed", Allow="POST")

    async def revoke(self, request: web.Request) -> web.Response:
        await self.string_intent(request, "token", self.gateway.revoke)
        return web.json_response({"revoked": True})

    async def remove(self, request: web.Request) -> web.Response:
        node_id = await self.string_intent(request, "node_id", self.gateway.remove)
        return web.json_response({"removed": node_id})

    async def make_admin(self, request: web.Request) -> web.Response:
        node_id = await self.string_intent(request, "node_id", self.gateway.make_admin)
        return web.json_response({"admin": node_id})

    async def serve(self, request: web.Request) -> web.Response:
        """{"model": NAME_OR_PATH}: this node asks the mesh to serve it, itself first."""
        model = string_field(api.parse_json_body(await request.read()), "model")
        try:
            model_id = await self.gateway.serve(model)
        except ValueError as error:
            raise RequestError(str(error), param="model") from None
        return web.json_response({"serving": model_id})

    async def rename(self, request: web.Request) -> web.Response:
        name = await self.string_intent(request, "name", self.gateway.rename)
        return web.json_response({"name": name.strip()})

    async def drop(self, request: web.Request) -> web.Response:
        model = await self.string_intent(request, "model", self.gateway.drop)
        return web.json_response({"dropped": model})

    async def string_intent(self, request: web.Request, field: str, intent) -> str:
        """Reads `{field: string}` and hands it to `intent`; its ValueError is the client's 400."""
        value = string_field(api.parse_json_body(await request.read()), field)
        try:
            intent(value)
        except ValueError as error:
            raise RequestError(str(error), param=field) from None
        return value

    async def capacity(self, request: web.Request) -> web.Response:
        """{"max_vram_gb": number or null, "donating": bool}, either or both."""
        body = api.parse_json_body(await request.read())
        if "max_vram_gb" in body:
            cap = body["max_vram_gb"]
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float))):
                raise RequestError("'max_vram_gb' must be a number of GB or null", param="max_vram_gb")
            try:
                self.gateway.set_capacity_cap(cap)
            except ValueError as error:
                raise RequestError(str(error), param="max_vram_gb") from None
        if "donating" in body:
            if not isinstance(body["donating"], bool):
                raise RequestError("'donating' must be true or false", param="donating")
            self.gateway.set_donating(body["donating"])
        return web.json_response(self.gateway.status().offer.to_wire())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = api.parse_json_body(await request.read())
        return await self.answer(request, api.parse_chat_request(body))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = api.parse_json_body(await request.read())
        return await self.answer(request, api.parse_completion_request(body))

    async def answer(self, http_request: web.Request, request: GenerationRequest) -> web.StreamResponse:
        events = self.gateway.generate(request)
        try:
            first_event = await anext(events)  # errors before any output still get a status code
            if request.stream:
                return await stream_answer(http_request, request, first_event, events)
            return await whole_answer(request, first_event, events)
        finally:
            await events.aclose()


def string_field(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise RequestError(f"'{name}' must be a non-empty string", param=name)
    return value


def new_response_id(request: GenerationRequest) -> str:
    prefix = "chatcmpl" if request.kind == "chat" else "cmpl"
    return f"{prefix}-{secrets.token_hex(12)}"


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


class GenerationFailed(Exception):
    """The model host failed on our side: a 500, not the client's fault."""


def raise_if_error(event: dict) -> None:
    if event.get("type") != "error":
        return
    message = str(event.get("message", "model host error"))
    if event.get("kind") == "request":
        param = event.get("param")  # the field the host names, e.g. "model" for an embedding model
        raise RequestError(message, code="invalid_prompt", param=param if isinstance(param, str) else None)
    raise GenerationFailed(message)


def usage_of(finish: dict) -> Usage:
    usage = finish.get("usage") or {}
    return Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def ending(request: GenerationRequest, finish: dict) -> tuple[str, list[dict]]:
    """The finish reason and the tool calls (OpenAI's "tool_calls" reason whenever there are some)."""
    if request.kind != "chat":
        finish = {key: value for key, value in finish.items() if key != "tool_calls"}
    allowed = api.CHAT_FINISH_REASONS if request.kind == "chat" else api.COMPLETION_FINISH_REASONS
    try:
        checked = checked_finish(finish, request.parallel_tool_calls, new_call_id, allowed)
    except ValueError as error:
        raise GenerationFailed(str(error)) from None
    return checked["finish_reason"], checked["tool_calls"]


async def whole_answer(request: GenerationRequest, first_event: dict, events) -> web.Response:
    text, finish = await collect(first_event, events)
    reason, calls = ending(request, finish)
    created = int(time.time())
    if request.kind == "chat":
        body = api.chat_completion(new_response_id(request), created, request.model, text, reason,
                                   usage_of(finish), tool_calls=calls)
    else:
        body = api.completion(new_response_id(request), created, request.model, text, reason, usage_of(finish))
    return web.json_response(body)


class ChunkWriter:
    """Writes one answer as OpenAI server-sent events."""

    def __init__(self, response: web.StreamResponse, request: GenerationRequest):
        self.response = response
        self.request = request
        self.id = new_response_id(request)
        self.created = int(time.time())

    async def send(self, payload: dict) -> None:
        await self.response.write(api.sse_event(payload))

    async def text(self, text: str, finish_reason: str | None = None) -> None:
        if self.request.kind == "chat":
            chunk = api.chat_chunk(self.id, self.created, self.request.model,
                                   content=text if text or finish_reason is None else None,
                                   finish_reason=finish_reason)
        else:
            chunk = api.completion_chunk(self.id, self.created, self.request.model,
                                         text=text, finish_reason=finish_reason)
        await self.send(chunk)

    async def opening(self) -> None:
        if self.request.kind == "chat":
            await self.send(api.chat_chunk(self.id, self.created, self.request.model,
                                           role="assistant", content=""))

    async def closing(self, finish: dict) -> None:
        reason, calls = ending(self.request, finish)
        for chunk in api.tool_call_chunks(self.id, self.created, self.request.model, calls):
            await self.send(chunk)
        await self.text("", reason)
        if self.request.include_usage:
            await self.send(api.usage_chunk(self.request, self.id, self.created,
                                            self.request.model, usage_of(finish)))
        await self.response.write(api.SSE_DONE)


async def stream_answer(http_request, request, first_event, events) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(http_request)
    writer = ChunkWriter(response, request)
    await writer.opening()
    try:
        await forward(writer, first_event, events)
    except (ModelUnavailable, RequestError, GenerationFailed) as error:
        # The status line is long gone; OpenAI clients raise on an `error` event.
        await writer.send(api.error_body(str(error), type="service_unavailable",
                                         code="model_unavailable"))
    await response.write_eof()
    return response


async def forward(writer: ChunkWriter, first_event: dict, events) -> None:
    event = first_event
    while True:
        raise_if_error(event)
        if event["type"] == "finish":
            await writer.closing(event)
            return
        await writer.text(event.get("text", ""))
        event = await anext(events)
