"""OpenAI response bodies, stream chunks and server-sent events (ids and times are parameters)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from meshdesk.core.openai_api.request import GenerationRequest

CHAT_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
COMPLETION_FINISH_REASONS = ("stop", "length", "content_filter")
SSE_DONE: bytes = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def chat_completion(id: str, created: int, model: str, text: str, finish_reason: str, usage: Usage,
                    tool_calls: list[dict] | tuple = ()) -> dict:
    """`tool_calls` as the finish event carries them, [{"id", "name", "arguments"}]: the message
    carries them in OpenAI's shape, its content null when the model wrote nothing else."""
    _check_finish_reason(finish_reason, CHAT_FINISH_REASONS)
    message: dict = {"role": "assistant", "content": text}
    if tool_calls:
        message = {"role": "assistant", "content": text or None, "tool_calls": openai_tool_calls(tool_calls)}
    choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
    return _envelope(id, "chat.completion", created, model, [choice]) | {"usage": usage.to_dict()}


def openai_tool_calls(tool_calls: list[dict] | tuple) -> list[dict]:
    return [{"id": call["id"], "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"]}} for call in tool_calls]


def tool_call_chunks(id: str, created: int, model: str, tool_calls: list[dict] | tuple) -> list[dict]:
    """The stream chunks of whole calls, as OpenAI streams them: per call, one delta that opens
    it (index, id, type, name, empty arguments), then one with all its arguments."""
    chunks = []
    for index, call in enumerate(tool_calls):
        opening = {"index": index, "id": call["id"], "type": "function",
                   "function": {"name": call["name"], "arguments": ""}}
        arguments = {"index": index, "function": {"arguments": call["arguments"]}}
        for delta in (opening, arguments):
            choice = {"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None, "logprobs": None}
            chunks.append(_envelope(id, "chat.completion.chunk", created, model, [choice]))
    return chunks


def chat_chunk(
    id: str,
    created: int,
    model: str,
    *,
    role: str | None = None,
    content: str | None = None,
    finish_reason: str | None = None,
) -> dict:
    if finish_reason is not None:
        _check_finish_reason(finish_reason, CHAT_FINISH_REASONS)
    delta = {key: value for key, value in (("role", role), ("content", content)) if value is not None}
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return _envelope(id, "chat.completion.chunk", created, model, [choice])


def completion(id: str, created: int, model: str, text: str, finish_reason: str, usage: Usage) -> dict:
    _check_finish_reason(finish_reason, COMPLETION_FINISH_REASONS)
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    return _envelope(id, "text_completion", created, model, [choice]) | {"usage": usage.to_dict()}


def completion_chunk(id: str, created: int, model: str, *, text: str, finish_reason: str | None = None) -> dict:
    if finish_reason is not None:
        _check_finish_reason(finish_reason, COMPLETION_FINISH_REASONS)
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    return _envelope(id, "text_completion", created, model, [choice])


def usage_chunk(request: GenerationRequest, id: str, created: int, model: str, usage: Usage) -> dict:
    object_name = "chat.completion.chunk" if request.kind == "chat" else "text_completion"
    return _envelope(id, object_name, created, model, []) | {"usage": usage.to_dict()}


def models_list(model_ids: list[str], created: int, owned_by: str = "meshdesk") -> dict:
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": owned_by} for model_id in model_ids
        ],
    }


def sse_event(payload: dict) -> bytes:
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate cannot be UTF-8; replacing it beats failing in the middle of a stream.
    return b"data: " + data.encode("utf-8", errors="replace") + b"\n\n"


def _envelope(id: str, object_name: str, created: int, model: str, choices: list) -> dict:
    return {"id": id, "object": object_name, "created": created, "model": model, "choices": choices}


def _check_finish_reason(finish_reason: str, allowed: tuple[str, ...]) -> None:
    if finish_reason not in allowed:
        raise ValueError(f"finish_reason must be one of {allowed}, got {finish_reason!r}")
