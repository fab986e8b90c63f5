"""Reading each field of an OpenAI request body: its type, its range, its default."""

from __future__ import annotations

from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe, valid_text
from meshdesk.core.openai_api.tools import message_tool_fields

CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
MAX_TOKENS_LIMIT = 1_000_000
MAX_STOP_SEQUENCES = 4
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1

_MISSING = object()


def read_model(body: dict) -> str:
    model = body.get("model", _MISSING)
    if model is _MISSING:
        raise RequestError("'model' is required", param="model")
    if not isinstance(model, str) or not model:
        raise RequestError(f"'model' must be a non-empty string, got {describe(model)}", param="model")
    return valid_text(model, "model")


def read_messages(body: dict) -> tuple[dict, ...]:
    messages = body.get("messages", _MISSING)
    if messages is _MISSING:
        raise RequestError("'messages' is required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            f"'messages' must be a non-empty list of message objects, got {describe(messages)}", param="messages"
        )
    return tuple(_message(message, f"messages[{index}]") for index, message in enumerate(messages))


def _message(message: Any, param: str) -> dict:
    if not isinstance(message, dict):
        raise RequestError(f"'{param}' must be a message object, got {describe(message)}", param=param)
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise RequestError(
            f"'{param}.role' must be one of {', '.join(CHAT_ROLES)}, got {describe(role)}", param=f"{param}.role"
        )
    content = _message_content(message, role, f"{param}.content")
    return {"role": role, "content": content, **message_tool_fields(message, role, param)}


def _message_content(message: dict, role: str, param: str) -> str:
    content = message.get("content")
    if content is None:
        if role == "assistant":  # assistant turns that only made tool calls carry no content
            return ""
        raise RequestError(f"'{param}' is required for a {role} message", param=param)
    if isinstance(content, str):
        return valid_text(content, param)
    if isinstance(content, list):
        return "\n".join(_text_part(part, f"{param}[{index}]") for index, part in enumerate(content))
    raise RequestError(
        f"'{param}' must be a string or a list of text parts, got {describe(content)}", param=param
    )


def _text_part(part: Any, param: str) -> str:
    if not isinstance(part, dict):
        raise RequestError(f"'{param}' must be a content part object, got {describe(part)}", param=param)
    if part.get("type") != "text":
        raise RequestError(
            f"only text content is supported: '{param}.type' must be \"text\", got {describe(part.get('type'))}",
            param=f"{param}.type",
        )
    text = part.get("text")
    if not isinstance(text, str):
        raise RequestError(f"'{param}.text' must be a string, got {describe(text)}", param=f"{param}.text")
    return valid_text(text, f"{param}.text")


def read_prompt(body: dict) -> str:
    prompt = body.get("prompt", _MISSING)
    if prompt is _MISSING or prompt is None:
        raise RequestError("'prompt' is required", param="prompt")
    if isinstance(prompt, str):
        return valid_text(prompt, "prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return valid_text(prompt[0], "prompt")
    if isinstance(prompt, list) and prompt and all(is_int(item) for item in prompt):
        raise RequestError("'prompt' as a list of token ids is not supported; send the text", param="prompt")
    if isinstance(prompt, list) and len(prompt) > 1:
        raise RequestError(
            f"only one prompt per request is supported, got a list of {len(prompt)}", param="prompt"
        )
    raise RequestError(
        f"'prompt' must be a string or a list holding exactly one string, got {describe(prompt)}", param="prompt"
    )


def read_chat_max_tokens(body: dict) -> int | None:
    newer = read_max_tokens(body, "max_completion_tokens")
    older = read_max_tokens(body, "max_tokens")
    return newer if newer is not None else older


def read_max_tokens(body: dict, field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise RequestError(f"'{field}' must be a positive integer, got {describe(value)}", param=field)
    if value > MAX_TOKENS_LIMIT:
        raise RequestError(f"'{field}' must be at most {MAX_TOKENS_LIMIT}, got {value}", param=field)
    return value


def read_temperature(body: dict) -> float:
    return _number_in_range(body, "temperature", DEFAULT_TEMPERATURE, lambda v: 0 <= v <= 2, "between 0 and 2")


def read_top_p(body: dict) -> float:
    return _number_in_range(body, "top_p", DEFAULT_TOP_P, lambda v: 0 < v <= 1, "greater than 0 and at most 1")


def _number_in_range(body: dict, field: str, default: float, in_range, expected: str) -> float:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{field}' must be a number, got {describe(value)}", param=field)
    if not in_range(value):  # also rejects NaN, which compares false with everything
        raise RequestError(f"'{field}' must be a number {expected}, got {describe(value)}", param=field)
    return float(value)


def read_penalty(body: dict, field: str) -> float:
    """presence_penalty, frequency_penalty: OpenAI's range, -2 to 2, default 0."""
    return _number_in_range(body, field, 0.0, lambda v: -2 <= v <= 2, "from -2 to 2")


def read_seed(body: dict) -> int | None:
    seed = body.get("seed")
    if seed is None:
        return None
    if not is_int(seed) or not SEED_MIN <= seed <= SEED_MAX:
        raise RequestError(f"'seed' must be a 64-bit integer or null, got {describe(seed)}", param="seed")
    return seed


def read_stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise RequestError(
            f"'stop' must be null, a string or a list of strings, got {describe(stop)}", param="stop"
        )
    if len(stop) > MAX_STOP_SEQUENCES:
        raise RequestError(
            f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stop)}", param="stop"
        )
    # An empty stop sequence would match at once and end every generation before it starts.
    return tuple(valid_text(item, "stop") for item in stop if item)


def read_include_usage(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    if not isinstance(options, dict):
        raise RequestError(
            f"'stream_options' must be an object or null, got {describe(options)}", param="stream_options"
        )
    return read_optional_bool(options, "include_usage", default=False, param="stream_options.include_usage")


def read_optional_bool(body: dict, field: str, *, default: bool, param: str | None = None) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        param = param or field
        raise RequestError(f"'{param}' must be a boolean, got {describe(value)}", param=param)
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
