"""The agents' APIs besides chat, in front of the node's gateway (aiohttp): OpenAI's Responses
API (`POST /v1/responses`, `responses_routes`) and Anthropic's Messages API (`POST /v1/messages`,
`messages_routes`), sharing how one answer is awaited, collected or streamed (`answers`).
`add_routes` is handed to `OpenAiServer(routes=...)` by the app, like the embeddings routes."""

from __future__ import annotations

from aiohttp import web

from meshdesk.adapters.agent_apis.messages_routes import MessagesRoutes
from meshdesk.adapters.agent_apis.responses_routes import ResponsesRoutes
from meshdesk.node.interfaces import Gateway


def add_routes(app: web.Application, gateway: Gateway) -> None:
    ResponsesRoutes(gateway).register(app)
    MessagesRoutes(gateway).register(app)
