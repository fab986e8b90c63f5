"""Requests for a model hosted elsewhere: sent over the data plane to the node that hosts it.

The requesting node sends `{"type": "generate", "request": ...}`. The hosting node answers with
the same events its model host gives (`delta`..., `finish`), or an `error` event whose kind
says what went wrong: `unavailable` (retry later), `lost` (its model went away mid-answer, e.g.
a split member under it died: the requesting node carries the answer on elsewhere), `unknown`
(no such model there), `request` (the client's mistake). A request may carry `continue_from`
(`core.continuation`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from meshdesk.core.frames import FrameError
from meshdesk.core.openai_api import GenerationRequest, RequestError
from meshdesk.node.interfaces import HostLost, LinkClosed, MessageLink, ModelBusy, ModelUnavailable, UnknownModel

log = logging.getLogger(__name__)

API_PURPOSE = "api"

OpenLink = Callable[[str, str], Awaitable[MessageLink]]
LocalGenerate = Callable[[GenerationRequest], AsyncIterator[dict]]


class RemoteModel:
    """A model served by another node, reached through the mesh."""

    def __init__(self, model_id: str, host_id: str, open_link: OpenLink):
        self.model_id = model_id
        self.host_id = host_id
        self.open_link = open_link

    async def generate(self, request: GenerationRequest) -> AsyncIterator[dict]:
        try:
            link = await self.open_link(self.host_id, API_PURPOSE)
        except LinkClosed as error:
            raise ModelUnavailable(f"cannot reach the host of {self.model_id}: {error}") from None
        try:
            await link.send({"type": "generate", "request": request.to_wire()})
            while True:
                event = await self._next_event(link)
                yield event
                if event.get("type") in ("finish", "error"):
                    return
        finally:
            link.close()

    async def _next_event(self, link: MessageLink) -> dict:
        try:
            event = await link.receive()
        except (LinkClosed, FrameError) as error:
            raise HostLost(f"the host of {self.model_id} went away mid-answer ({error})",
                           self.host_id, node_gone=True) from None
        if event.get("type") == "error":
            raise_remote_error(event, self.host_id)
        return event


def raise_remote_error(event: dict, host_id: str | None = None) -> None:
    kind, message = event.get("kind"), str(event.get("message", "remote error"))[:1000]
    if kind == "lost":
        raise HostLost(message, host_id, node_gone=False)
    if kind in ("unavailable", "busy"):
        retry = event.get("retry_after")
        retry = retry if isinstance(retry, int) and not isinstance(retry, bool) and 0 < retry <= 3600 else 2
        raise (ModelBusy if kind == "busy" else ModelUnavailable)(message, retry)
    if kind == "unknown":
        raise UnknownModel(message)


async def serve_remote_request(link: MessageLink, generate: LocalGenerate) -> None:
    """The hosting node's end: one request, answered from this node's own model hosts."""
    try:
        message = await link.receive()
        request = GenerationRequest.from_wire(message.get("request") if isinstance(message, dict) else None)
        async for event in generate(request):
            await link.send(event)
    except RequestError as error:
        await send_error(link, "request", f"bad forwarded request: {error}")
    except HostLost as error:
        await send_error(link, "lost", str(error))
    except ModelBusy as error:  # a 429 at the requesting node's API too
        await send_error(link, "busy", str(error), retry_after=error.retry_after)
    except ModelUnavailable as error:
        await send_error(link, "unavailable", str(error), retry_after=error.retry_after)
    except UnknownModel as error:
        await send_error(link, "unknown", str(error))
    except (LinkClosed, FrameError, ConnectionError):
        pass  # the requesting node went away: its generation stops with this connection
    except Exception:  # our bug, not the requester's: say so there, and log it here
        log.exception("answering a forwarded request failed")
        await send_error(link, "server", "the hosting node failed to answer; its log says why")
    finally:
        link.close()


async def send_error(link: MessageLink, kind: str, message: str, **extra) -> None:
    try:
        await link.send({"type": "error", "kind": kind, "message": message, **extra})
    except (LinkClosed, ConnectionError):
        pass
