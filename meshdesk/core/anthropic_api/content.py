"""The `system` and `messages` of an Anthropic Messages body as the messages of the equivalent
chat body: text blocks become content, `tool_use` blocks the tool calls of an assistant message,
`tool_result` blocks tool messages (in the order the blocks came).

Only text reaches the model: image, document and the other media blocks are refused by name,
as are thinking blocks (the models this node serves do not think aloud, so such a block comes
from another model's turn). `cache_control` and `citations` are accepted and ignored: they
cannot change the answer."""

from __future__ import annotations

import json
from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe, valid_text

IGNORED_BLOCK_KEYS = {"cache_control", "citations"}
BLOCK_KEYS = {
    "text": {"type", "text"},
    "tool_use": {"type", "id", "name", "input"},
    "tool_result": {"type", "tool_use_id", "content", "is_error"},
}
# Claude Code sends "system" turns inside `messages` too (instructions that arrive mid-conversation).
BLOCKS_BY_ROLE = {"user": ("text", "tool_result"), "assistant": ("text", "tool_use"), "system": ("text",)}


def system_messages(body: dict) -> list[dict]:
    system = body.get("system")
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": valid_text(system, "system")}] if system else []
    if isinstance(system, list):
        texts = [_block(block, f"system[{index}]", ("text",))["text"] for index, block in enumerate(system)]
        return [{"role": "system", "content": "\n".join(texts)}] if texts else []
    raise RequestError(f"system: must be a string or a list of text blocks, got {describe(system)}",
                       param="system")


def chat_messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(f"messages: must be a non-empty list of messages, got {describe(messages)}",
                           param="messages")
    chat: list[dict] = []
    for index, message in enumerate(messages):
        chat += _message(message, f"messages[{index}]")
    if messages[-1].get("role") == "assistant":
        raise RequestError("messages: a final assistant message (a prefill for the answer to continue) is not "
                           "supported; end with a user message", param=f"messages[{len(messages) - 1}]")
    return chat


def _message(message: Any, param: str) -> list[dict]:
    if not isinstance(message, dict):
        raise RequestError(f"{param}: must be a message object, got {describe(message)}", param=param)
    extra = sorted(set(message) - {"role", "content"})
    if extra:
        raise RequestError(f"{param}.{extra[0]}: Extra inputs are not permitted", param=f"{param}.{extra[0]}")
    role = message.get("role")
    if role not in BLOCKS_BY_ROLE:
        raise RequestError(f"{param}.role: must be \"user\", \"assistant\" or \"system\", got {describe(role)}",
                           param=f"{param}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": valid_text(content, f"{param}.content")}]
    if not isinstance(content, list):
        raise RequestError(f"{param}.content: must be a string or a list of content blocks, "
                           f"got {describe(content)}", param=f"{param}.content")
    blocks = [_block(block, f"{param}.content[{index}]", BLOCKS_BY_ROLE[role])
              for index, block in enumerate(content)]
    if role == "system":
        return [{"role": "system", "content": "\n".join(block["text"] for block in blocks)}]
    return _assistant_turn(blocks) if role == "assistant" else _user_turn(blocks)


def _block(block: Any, param: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(block, dict):
        raise RequestError(f"{param}: must be a content block object, got {describe(block)}", param=param)
    kind = block.get("type")
    if kind not in allowed:
        raise RequestError(f"{param}.type: {describe(kind)} blocks are not supported here; this node's models "
                           f"read only {' and '.join(allowed)} blocks", param=f"{param}.type")
    extra = sorted(set(block) - BLOCK_KEYS[kind] - IGNORED_BLOCK_KEYS)
    if extra:
        raise RequestError(f"{param}.{extra[0]}: Extra inputs are not permitted", param=f"{param}.{extra[0]}")
    if kind == "text":
        return {"type": "text", "text": _string(block, "text", param, empty_ok=True)}
    if kind == "tool_use":
        arguments = block.get("input")
        if not isinstance(arguments, dict):
            raise RequestError(f"{param}.input: must be an object, got {describe(arguments)}",
                               param=f"{param}.input")
        return {"type": "tool_use", "id": _string(block, "id", param), "name": _string(block, "name", param),
                "arguments": json.dumps(arguments, ensure_ascii=False)}
    return {"type": "tool_result", "tool_use_id": _string(block, "tool_use_id", param),
            "text": _result_text(block, param)}


def _result_text(block: dict, param: str) -> str:
    content = block.get("content", "")
    if isinstance(content, list):
        content = "\n".join(_block(part, f"{param}.content[{index}]", ("text",))["text"]
                            for index, part in enumerate(content))
    elif not isinstance(content, str):
        raise RequestError(f"{param}.content: must be a string or a list of text blocks, got "
                           f"{describe(content)}", param=f"{param}.content")
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise RequestError(f"{param}.is_error: must be a boolean, got {describe(is_error)}",
                           param=f"{param}.is_error")
    return f"Error: {content}" if is_error else valid_text(content, f"{param}.content")


def _assistant_turn(blocks: list[dict]) -> list[dict]:
    text = "".join(block["text"] for block in blocks if block["type"] == "text")
    calls = [{"id": block["id"], "type": "function",
              "function": {"name": block["name"], "arguments": block["arguments"]}}
             for block in blocks if block["type"] == "tool_use"]
    return [{"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}]


def _user_turn(blocks: list[dict]) -> list[dict]:
    """Tool results as tool messages and text as user messages, in the order they came."""
    turn: list[dict] = []
    for block in blocks:
        if block["type"] == "tool_result":
            turn.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": block["text"]})
        elif turn and turn[-1]["role"] == "user":
            turn[-1]["content"] += "\n" + block["text"]
        else:
            turn.append({"role": "user", "content": block["text"]})
    return turn or [{"role": "user", "content": ""}]


def _string(block: dict, key: str, param: str, *, empty_ok: bool = False) -> str:
    value = block.get(key)
    if not isinstance(value, str) or (not value and not empty_ok):
        raise RequestError(f"{param}.{key}: must be a non-empty string, got {describe(value)}",
                           param=f"{param}.{key}")
    return valid_text(value, f"{param}.{key}")
