"""A Responses API `input` (a string, or a list of items) and `instructions` as the messages of
the equivalent chat body: message items become chat messages, `function_call` items become the
tool calls of an assistant message, `function_call_output` items become tool messages.

Only text reaches the model: an image, a file or audio is refused by name, as is any item that
needs state this node does not keep (`item_reference`) or that only OpenAI's own models make
(`reasoning` and the hosted tools' calls)."""

from __future__ import annotations

from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe, valid_text

INPUT_ROLES = ("user", "system", "developer", "assistant")
# The parts a message's content may hold, by who wrote it, and the key their text is under.
TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
ITEM_KEYS = {
    "message": {"type", "role", "content", "id", "status", "phase", "end_turn"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status", "namespace"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
}


def input_messages(body: dict) -> list[dict]:
    """The chat messages for `instructions` and `input`, in order."""
    messages = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise RequestError(f"'instructions' must be a string, got {describe(instructions)}",
                               param="instructions")
        messages.append({"role": "system", "content": valid_text(instructions, "instructions")})
    given = body.get("input")
    if given is None:
        raise RequestError("'input' is required", param="input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": valid_text(given, "input")})
    elif isinstance(given, list) and given:
        for index, item in enumerate(given):
            _add_item(messages, item, f"input[{index}]")
    else:
        raise RequestError(f"'input' must be a string or a non-empty list of input items, got {describe(given)}",
                           param="input")
    if not any(message["role"] != "system" for message in messages):
        raise RequestError("'input' must hold at least one message besides the instructions", param="input")
    return messages


def _add_item(messages: list[dict], item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise RequestError(f"'{param}' must be an input item object, got {describe(item)}", param=param)
    kind = item.get("type", "message")  # an EasyInputMessage may leave out its type
    if kind not in ITEM_KEYS:
        raise RequestError(f"'{param}.type' {describe(kind)} is not supported: this node takes message, "
                           "function_call and function_call_output items (it keeps no stored items and "
                           "makes no reasoning or hosted tool calls)", param=f"{param}.type")
    extra = sorted(set(item) - ITEM_KEYS[kind])
    if extra:
        raise RequestError(f"'{param}.{extra[0]}' is not supported on a {kind} item", param=f"{param}.{extra[0]}")
    if kind == "message":
        messages.append(_message(item, param))
    elif kind == "function_call":
        _add_call(messages, item, param)
    else:
        messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", param),
                         "content": _output_text(item.get("output"), f"{param}.output")})


def _message(item: dict, param: str) -> dict:
    role = item.get("role")
    if role not in INPUT_ROLES:
        raise RequestError(f"'{param}.role' must be one of {', '.join(INPUT_ROLES)}, got {describe(role)}",
                           param=f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": valid_text(content, f"{param}.content")}
    if not isinstance(content, list):
        raise RequestError(f"'{param}.content' must be a string or a list of content parts, "
                           f"got {describe(content)}", param=f"{param}.content")
    texts = [_text_part(part, f"{param}.content[{index}]") for index, part in enumerate(content)]
    return {"role": role, "content": "".join(texts) if role == "assistant" else "\n".join(texts)}


def _text_part(part: Any, param: str) -> str:
    if not isinstance(part, dict):
        raise RequestError(f"'{param}' must be a content part object, got {describe(part)}", param=param)
    kind = part.get("type")
    if kind not in TEXT_PARTS:
        raise RequestError(f"only text content is supported: '{param}.type' must be input_text, output_text "
                           f"or refusal, got {describe(kind)}", param=f"{param}.type")
    return _string(part, TEXT_PARTS[kind], param, empty_ok=True)


def _add_call(messages: list[dict], item: dict, param: str) -> None:
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise RequestError(f"'{param}.arguments' must be a string of JSON, got {describe(arguments)}",
                           param=f"{param}.arguments")
    call = {"id": _string(item, "call_id", param), "type": "function",
            "function": {"name": _string(item, "name", param), "arguments": valid_text(arguments, param)}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)  # the calls of the turn that wrote the text
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _output_text(output: Any, param: str) -> str:
    if isinstance(output, str):
        return valid_text(output, param)
    if isinstance(output, list):
        return "\n".join(_text_part(part, f"{param}[{index}]") for index, part in enumerate(output))
    raise RequestError(f"'{param}' must be a string or a list of input_text parts, got {describe(output)}",
                       param=param)


def _string(item: dict, key: str, param: str, *, empty_ok: bool = False) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (not value and not empty_ok):
        raise RequestError(f"'{param}.{key}' must be a non-empty string, got {describe(value)}",
                           param=f"{param}.{key}")
    return valid_text(value, f"{param}.{key}")
