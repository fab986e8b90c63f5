"""Chat on the node's own model hosts: history from the store, replies streamed to a listener.

The desktop Chat view is the listener, but nothing here knows Qt: the service calls plain
callbacks on the event loop, and stopping is cancelling the reply's task (which closes the
connection to the model host, the child's cancel signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

from meshdesk.core.openai_api import RequestError, parse_chat_request
from meshdesk.node.chat_store import ChatStore, Message
from meshdesk.node.interfaces import ModelUnavailable, UnknownModel

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024
STOPPED = "stopped"


@dataclass
class ReplyListener:
    """What a view hears while a reply streams in; every call happens on the event loop."""

    on_delta: Callable[[str], None]
    on_done: Callable[[Message | None], None]  # the stored reply; None if stopped before a word
    on_error: Callable[[str], None]       # one line for the user; nothing was stored


class ChatService:
    def __init__(self, node, store: ChatStore, max_tokens: int = DEFAULT_MAX_TOKENS):
        self.node = node
        self.store = store
        self.max_tokens = max_tokens
        self.reply_task: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        return self.reply_task is not None and not self.reply_task.done()

    def send(self, conversation_id: int, text: str, model: str,
             listener: ReplyListener) -> asyncio.Task:
        """Stores the user's message, then streams the reply in a task."""
        self._refuse_if_busy()
        self.store.add_message(conversation_id, "user", text)
        return self._start(conversation_id, model, listener)

    def regenerate(self, conversation_id: int, model: str, listener: ReplyListener) -> asyncio.Task:
        """Replaces the last reply with a new one."""
        self._refuse_if_busy()
        self.store.drop_trailing_reply(conversation_id)
        return self._start(conversation_id, model, listener)

    def stop(self) -> None:
        if self.busy:
            self.reply_task.cancel()

    def _refuse_if_busy(self) -> None:
        if self.busy:
            raise RuntimeError("a reply is still streaming; stop it first")

    def _start(self, conversation_id: int, model: str, listener: ReplyListener) -> asyncio.Task:
        self.reply_task = asyncio.ensure_future(self._reply(conversation_id, model, listener))
        return self.reply_task

    async def _reply(self, conversation_id: int, model: str, listener: ReplyListener) -> None:
        pieces: list[str] = []
        try:
            finish_reason = await self._stream(conversation_id, model, pieces, listener.on_delta)
        except asyncio.CancelledError:
            listener.on_done(self._store_reply(conversation_id, model, pieces, STOPPED))
            raise
        except ReplyFailed as failure:
            listener.on_error(str(failure))
            return
        listener.on_done(self._store_reply(conversation_id, model, pieces, finish_reason))

    async def _stream(self, conversation_id: int, model: str, pieces: list[str],
                      on_delta: Callable[[str], None]) -> str:
        request = self._request(conversation_id, model)
        try:
            async with contextlib.aclosing(self.node.generate(request)) as events:
                async for event in events:
                    if event.get("type") == "delta":
                        pieces.append(event["text"])
                        on_delta(event["text"])
                    elif event.get("type") == "error":
                        raise ReplyFailed(event.get("message") or "the model failed")
                    elif event.get("type") == "finish":
                        return event.get("finish_reason") or "stop"
        except (UnknownModel, ModelUnavailable) as error:
            raise ReplyFailed(str(error)) from None
        return "stop"

    def _request(self, conversation_id: int, model: str):
        history = [message.for_request() for message in self.store.messages(conversation_id)]
        body = {"model": model, "messages": history, "stream": True, "max_tokens": self.max_tokens}
        try:
            return parse_chat_request(body)
        except RequestError as error:
            raise ReplyFailed(str(error)) from None

    def _store_reply(self, conversation_id: int, model: str, pieces: list[str],
                     finish_reason: str) -> Message | None:
        if not pieces and finish_reason == STOPPED:
            return None
        return self.store.add_message(conversation_id, "assistant", "".join(pieces), model,
                                      finish_reason)


class ReplyFailed(Exception):
    """The reply could not be produced; str() is the reason for the user."""
