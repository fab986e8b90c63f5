"""Anthropic Messages answers, from the node's answer events (text deltas, then a finish event
that may carry whole tool calls): the message object, and its stream as a plain object that
turns each answer event into (event name, payload) pairs.

The stream's order is Anthropic's: message_start, ping; a text block (content_block_start,
content_block_delta text_delta..., content_block_stop); one block per tool call
(content_block_start tool_use, one input_json_delta with the whole input, content_block_stop);
message_delta (stop_reason, usage), message_stop. The id derives from a random `token` the
caller draws (`msg_TOKEN`); tool use ids are the calls' own, prefixed `toolu_`."""

from __future__ import annotations

import json

from meshdesk.core.anthropic_api.errors import error_body

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
Event = tuple[str, dict]


def tool_use_id(call_id: str) -> str:
    return call_id if call_id.startswith("toolu_") else f"toolu_{call_id}"


def tool_input(arguments: str) -> dict:
    """A call's arguments as the object Anthropic's `input` is; ValueError if they are not one."""
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"the model's tool call arguments are not a JSON object: {arguments[:80]!r}")
    return value


def tool_use_block(call: dict) -> dict:
    return {"type": "tool_use", "id": tool_use_id(call["id"]), "name": call["name"],
            "input": tool_input(call["arguments"])}


def stop_sequence(finish: dict) -> str | None:
    """The client's stop sequence the answer ended on: the host's finish names it as
    "stop_sequence" when one matched (an older host does not: then None, and "end_turn")."""
    value = finish.get("stop_sequence")
    if not isinstance(value, str) or not value or finish.get("tool_calls") \
            or (finish.get("finish_reason") or "stop") != "stop":
        return None
    return value


def stop_reason(finish: dict) -> str:
    if finish.get("tool_calls"):
        return "tool_use"
    if stop_sequence(finish) is not None:
        return "stop_sequence"
    return STOP_REASONS.get(finish.get("finish_reason") or "stop", "end_turn")


def usage(finish: dict) -> dict:
    counts = finish.get("usage") or {}
    return {"input_tokens": int(counts.get("prompt_tokens", 0)),
            "output_tokens": int(counts.get("completion_tokens", 0))}


def message(token: str, model: str, *, content: list[dict], stop: str | None, counts: dict,
            sequence: str | None = None) -> dict:
    return {"id": f"msg_{token}", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": sequence, "usage": counts}


def whole_message(token: str, model: str, text: str, finish: dict) -> dict:
    calls = finish.get("tool_calls") or []
    content = [{"type": "text", "text": text}] if text or not calls else []
    content += [tool_use_block(call) for call in calls]
    return message(token, model, content=content, stop=stop_reason(finish), counts=usage(finish),
                   sequence=stop_sequence(finish))


class MessageEvents:
    def __init__(self, token: str, model: str):
        self.token = token
        self.model = model
        self.blocks = 0  # content blocks started so far
        self.text_open = False

    def opening(self) -> list[Event]:
        # input_tokens is not known yet: the host counts the prompt only as it answers, and its
        # first event is text. message_delta's usage carries the real count at the end.
        start = message(self.token, self.model, content=[], stop=None,
                        counts={"input_tokens": 0, "output_tokens": 0})
        return [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]

    def delta(self, text: str) -> list[Event]:
        if not text:
            return []
        events = self._open_text()
        return events + [("content_block_delta", {"type": "content_block_delta", "index": self.blocks - 1,
                                                  "delta": {"type": "text_delta", "text": text}})]

    def finish(self, finish: dict) -> list[Event]:
        calls = finish.get("tool_calls") or []
        blocks = [tool_use_block(call) for call in calls]  # a ValueError here leaves nothing half-sent
        events = self._open_text() if not self.text_open and not calls else []
        events += self._close_text()
        for block in blocks:
            events += self._tool_use_events(block)
        counts = usage(finish)
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason(finish),
                                                   "stop_sequence": stop_sequence(finish)},
                                         "usage": counts}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def failure(self, status: int, message_text: str) -> list[Event]:
        return [("error", error_body(status, message_text))]

    def _open_text(self) -> list[Event]:
        if self.text_open:
            return []
        self.text_open = True
        self.blocks += 1
        return [("content_block_start", {"type": "content_block_start", "index": self.blocks - 1,
                                         "content_block": {"type": "text", "text": ""}})]

    def _close_text(self) -> list[Event]:
        if not self.text_open:
            return []
        self.text_open = False
        return [("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1})]

    def _tool_use_events(self, block: dict) -> list[Event]:
        index = self.blocks
        self.blocks += 1
        started = dict(block, input={})
        return [("content_block_start", {"type": "content_block_start", "index": index, "content_block": started}),
                ("content_block_delta", {"type": "content_block_delta", "index": index,
                                         "delta": {"type": "input_json_delta",
                                                   "partial_json": json.dumps(block["input"], ensure_ascii=False)}}),
                ("content_block_stop", {"type": "content_block_stop", "index": index})]
