"""Chat on the node's own model hosts: history from the store, replies streamed to a listener.

The desktop Chat view is the listener, but nothing here knows Qt: the service calls plain
callbacks on the event loop, and stopping is cancelling the reply's task (which closes the
connection to the model host, the child's cancel signal).

Each stored reply carries its speed and the machines that served it. Speed is decoding speed,
as LM Studio shows it: the tokens after the first over the time from the first piece to the
end (the usage's `completion_tokens`, else the pieces counted), so the prompt's processing and
the first token's wait are left out. The machines are read from the node's plan for the model
when the reply ends: its host, then the split's other members, by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from meshdesk.core.openai_api import RequestError, parse_chat_request
from meshdesk.core.status import StatusSnapshot
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


@dataclass
class ReplyProgress:
    """What has streamed in so far, with when the first and latest pieces came (clock seconds)."""

    pieces: list[str] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None
    completion_tokens: int | None = None

    def add(self, text: str, now: float) -> None:
        self.pieces.append(text)
        self.first_at = now if self.first_at is None else self.first_at
        self.last_at = now

    def tokens_per_second(self) -> float | None:
        tokens = self.completion_tokens if self.completion_tokens else len(self.pieces)
        if self.first_at is None or tokens < 2 or self.last_at <= self.first_at:
            return None
        return (tokens - 1) / (self.last_at - self.first_at)


def serving_machines(snapshot: StatusSnapshot, model: str) -> tuple[str, ...]:
    """Names of the machines in the plan serving `model`: the host first, then the members."""
    names = {peer.id: peer.name for peer in snapshot.peers}
    names[snapshot.node.id] = snapshot.node.name
    for plan in snapshot.plans:
        if plan.model == model and plan.host:
            ids = dict.fromkeys((plan.host, *plan.member_ids()))
            return tuple(names.get(node_id, node_id[:8]) for node_id in ids)
    return ()


class ChatService:
    def __init__(self, node, store: ChatStore, max_tokens: int = DEFAULT_MAX_TOKENS,
                 clock: Callable[[], float] = time.monotonic):
        self.node = node
        self.store = store
        self.max_tokens = max_tokens
        self.clock = clock
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
        progress = ReplyProgress()
        try:
            finish_reason = await self._stream(conversation_id, model, progress, listener.on_delta)
        except asyncio.CancelledError:
            listener.on_done(self._store_reply(conversation_id, model, progress, STOPPED))
            raise
        except ReplyFailed as failure:
            listener.on_error(str(failure))
            return
        listener.on_done(self._store_reply(conversation_id, model, progress, finish_reason))

    async def _stream(self, conversation_id: int, model: str, progress: ReplyProgress,
                      on_delta: Callable[[str], None]) -> str:
        request = self._request(conversation_id, model)
        try:
            async with contextlib.aclosing(self.node.generate(request)) as events:
                async for event in events:
                    if event.get("type") == "delta":
                        progress.add(event["text"], self.clock())
                        on_delta(event["text"])
                    elif event.get("type") == "error":
                        raise ReplyFailed(event.get("message") or "the model failed")
                    elif event.get("type") == "finish":
                        progress.completion_tokens = completion_tokens(event)
                        progress.last_at = self.clock() if progress.pieces else None
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

    def _store_reply(self, conversation_id: int, model: str, progress: ReplyProgress,
                     finish_reason: str) -> Message | None:
        if not progress.pieces and finish_reason == STOPPED:
            return None
        return self.store.add_message(conversation_id, "assistant", "".join(progress.pieces), model,
                                      finish_reason, progress.tokens_per_second(),
                                      self._machines(model))

    def _machines(self, model: str) -> tuple[str, ...]:
        try:
            snapshot = self.node.status()
        except Exception as error:  # the names are a nicety; a reply is never lost for them
            log.warning("cannot tell which machines served %s: %s", model, error)
            return ()
        name = getattr(self.node, "aliases", {}).get(model, model)
        return serving_machines(snapshot, name)


def completion_tokens(finish: dict) -> int | None:
    usage = finish.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and tokens > 0 else None


class ReplyFailed(Exception):
    """The reply could not be produced; str() is the reason for the user."""
