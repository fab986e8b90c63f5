"""`POST /v1/responses`, OpenAI's Responses API. Its errors are OpenAI's shape: the server's
`openai_errors` middleware shapes the client's and the node's; a failed answer is a 500 here."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from meshdesk.adapters.agent_apis.answers import AnswerFailed, answer_events, collect, relay
from meshdesk.core import openai_api
from meshdesk.core.openai_api import RequestError
from meshdesk.core.responses_api import ResponseEvents, parse_responses_request, whole_response
from meshdesk.node.interfaces import Gateway


class ResponsesRoutes:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self.create)
        app.router.add_get("/v1/responses/{response_id}", self.retrieve)

    async def retrieve(self, http_request: web.Request) -> web.Response:
        raise RequestError(f"no response {http_request.match_info['response_id'][:80]!r}: this node keeps no "
                           "responses (it answers with store false)", status=404, param="response_id",
                           code="not_found")

    async def create(self, http_request: web.Request) -> web.StreamResponse:
        try:
            return await self._create(http_request)
        except (AnswerFailed, ValueError) as error:
            body = openai_api.error_body(str(error) or "model host error", type="server_error")
            return web.json_response(body, status=500)

    async def _create(self, http_request: web.Request) -> web.StreamResponse:
        call = parse_responses_request(openai_api.parse_json_body(await http_request.read()))
        first, events = await answer_events(self.gateway, call.request)
        token, created_at = secrets.token_hex(12), int(time.time())
        try:
            if call.request.stream:
                shaper = ResponseEvents(call, token, created_at)
                return await relay(http_request, shaper, first, events, lambda error: shaper.failure(str(error)))
            text, finish = await collect(first, events)
            return web.json_response(whole_response(call, token, created_at, text, finish))
        finally:
            await events.aclose()
