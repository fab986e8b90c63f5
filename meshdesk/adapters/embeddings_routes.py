"""POST /v1/embeddings (aiohttp), in front of the node's gateway like chat.

The body is read by `core.openai_api.embeddings`; the texts go to the gateway as a
`GenerationRequest` of kind "embedding", which routes them like chat: to this node's model host,
or over the mesh to the node that hosts the model. The host answers one `embedding` event per
text and a `finish`; a model that cannot embed answers a request error naming it (a 400).
Errors leave through `openai_server.openai_errors`, which shapes whatever this raises.
"""

from __future__ import annotations

from aiohttp import web

from meshdesk.core import openai_api as api
from meshdesk.core.openai_api import RequestError
from meshdesk.core.openai_api.embeddings import (EmbeddingAnswer, check_dimensions, embeddings_body,
                                                 read_embedding_options)
from meshdesk.core.openai_api.request import parse_embedding_request
from meshdesk.node.interfaces import Gateway


def add_routes(app: web.Application, gateway: Gateway) -> None:
    async def embeddings(http_request: web.Request) -> web.Response:
        return await answer_embeddings(gateway, http_request)
    app.router.add_post("/v1/embeddings", embeddings)


async def answer_embeddings(gateway: Gateway, http_request: web.Request) -> web.Response:
    body = api.parse_json_body(await http_request.read())
    options = read_embedding_options(body)
    request = parse_embedding_request(body)
    answer = EmbeddingAnswer(len(request.input))
    usage: dict | None = None
    events = gateway.generate(request)
    try:
        async for event in events:
            if event.get("type") == "error":
                raise error_of(event)
            if event.get("type") == "finish":
                usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
                break
            if event.get("type") == "embedding":
                add(answer, event)
    finally:
        await events.aclose()
    if usage is None:
        raise host_failed("the model host's answer ended before it finished")
    vectors = complete(answer)
    check_dimensions(options, len(vectors[0]), request.model)
    prompt_tokens = usage.get("prompt_tokens")
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        prompt_tokens = 0
    return web.json_response(embeddings_body(request.model, vectors, options, prompt_tokens))


def error_of(event: dict) -> RequestError:
    message = str(event.get("message", "model host error"))[:2000]
    if event.get("kind") == "request":
        param = event.get("param")
        return RequestError(message, param=param if isinstance(param, str) else None)
    return host_failed(message)


def add(answer: EmbeddingAnswer, event: dict) -> None:
    try:
        answer.add(event)
    except ValueError as error:
        raise host_failed(str(error)) from None


def complete(answer: EmbeddingAnswer) -> list[list[float]]:
    try:
        return answer.complete()
    except ValueError as error:
        raise host_failed(str(error)) from None


def host_failed(message: str) -> RequestError:
    """The model host failed on our side: a 500, not the client's fault."""
    return RequestError(message, status=500, type="server_error")
