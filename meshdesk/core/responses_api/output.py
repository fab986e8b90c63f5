"""Responses API output: the response object, its output items, its usage, from the node's
answer events (text deltas, then a finish event that may carry whole tool calls).

Every id derives from one random `token` the caller draws (`resp_TOKEN`, `msg_TOKEN`,
`fc_TOKEN_N`) and `created_at` is given, so these are plain functions of their arguments."""

from __future__ import annotations

import json

from meshdesk.core.responses_api.request import ResponsesCall


def response_id(token: str) -> str:
    return f"resp_{token}"


def message_id(token: str) -> str:
    return f"msg_{token}"


def call_item_id(token: str, index: int) -> str:
    return f"fc_{token}_{index}"


def output_text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(token: str, text: str | None, status: str) -> dict:
    """The assistant's message; `text` None while it has no content part yet."""
    content = [] if text is None else [output_text_part(text)]
    return {"id": message_id(token), "type": "message", "role": "assistant", "status": status,
            "content": content}


def function_call_item(token: str, index: int, call: dict, status: str = "completed",
                       arguments: str | None = None) -> dict:
    return {"id": call_item_id(token, index), "type": "function_call", "call_id": call["id"],
            "name": call["name"], "arguments": call["arguments"] if arguments is None else arguments,
            "status": status}


def usage(finish: dict) -> dict:
    counts = finish.get("usage") or {}
    prompt, completion = int(counts.get("prompt_tokens", 0)), int(counts.get("completion_tokens", 0))
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def status_of(finish: dict) -> str:
    return "incomplete" if finish.get("finish_reason") == "length" else "completed"


def output_items(token: str, text: str, finish: dict) -> list[dict]:
    """A message item when there is text (or nothing else), then one item per tool call."""
    calls = finish.get("tool_calls") or []
    items = [message_item(token, text, status_of(finish))] if text or not calls else []
    return items + [function_call_item(token, index, call) for index, call in enumerate(calls)]


def response_object(call: ResponsesCall, token: str, created_at: int, *, status: str,
                    output: list[dict], finish: dict | None = None, error: dict | None = None) -> dict:
    """The response object: `finish` None while it is in progress (or when it failed)."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {"id": response_id(token), "object": "response", "created_at": created_at, "status": status,
            "background": False, "error": error, "incomplete_details": incomplete,
            "model": call.request.model, "output": output,
            "usage": usage(finish) if finish is not None else None, **call.echo}


def whole_response(call: ResponsesCall, token: str, created_at: int, text: str, finish: dict) -> dict:
    return response_object(call, token, created_at, status=status_of(finish),
                           output=output_items(token, text, finish), finish=finish)


def output_text(response: dict) -> str:
    """The text of a response object's messages, as the SDKs' `output_text` reads it."""
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


def named_sse_event(name: str, payload: dict) -> bytes:
    """`event: NAME` and `data: JSON`, as the Responses and Anthropic streams send events."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate cannot be UTF-8; replacing it beats failing in the middle of a stream.
    return f"event: {name}\ndata: {data}\n\n".encode("utf-8", errors="replace")
