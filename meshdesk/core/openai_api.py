"""OpenAI-compatible request parsing and response shaping (pure: ids and timestamps are parameters)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
MAX_TOKENS_LIMIT = 1_000_000
MAX_STOP_SEQUENCES = 4
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
CHAT_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
COMPLETION_FINISH_REASONS = ("stop", "length", "content_filter")
SSE_DONE: bytes = b"data: [DONE]\n\n"

_MISSING = object()


# ---------------------------------------------------------------- errors


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class RequestError(Exception):
    """A client's mistake, reported in OpenAI's error shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def to_body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


# ---------------------------------------------------------------- request model


@dataclass(frozen=True)
class GenerationRequest:
    kind: str
    model: str
    messages: tuple[dict, ...]
    prompt: str
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool

    def to_wire(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model,
            "messages": [dict(message) for message in self.messages],
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "seed": self.seed,
            "stream": self.stream,
            "include_usage": self.include_usage,
        }

    @classmethod
    def from_wire(cls, data: dict) -> GenerationRequest:
        # Rebuilding an OpenAI body and reparsing it keeps one set of validation rules.
        if not isinstance(data, dict):
            raise RequestError(f"a wire request must be an object, got {_describe(data)}")
        kind = data.get("kind")
        if kind == "chat":
            _require_wire_empty(data, "prompt", "")
            return parse_chat_request(_wire_to_body(data, "messages"))
        if kind == "completion":
            _require_wire_empty(data, "messages", [])
            return parse_completion_request(_wire_to_body(data, "prompt"))
        raise RequestError(f"'kind' must be \"chat\" or \"completion\", got {_describe(kind)}", param="kind")


def _require_wire_empty(data: dict, field: str, empty: Any) -> None:
    if data.get(field, empty) != empty:
        raise RequestError(f"'{field}' must be empty for a {data['kind']} request", param=field)


def _wire_to_body(data: dict, input_field: str) -> dict:
    body = {key: data[key] for key in ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream")
            if key in data}
    if input_field in data:
        body[input_field] = data[input_field]
    if _wire_include_usage(data):
        body["stream_options"] = {"include_usage": True}
    return body


def _wire_include_usage(data: dict) -> bool:
    include_usage = data.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise RequestError(
            f"'include_usage' must be a boolean, got {_describe(include_usage)}", param="include_usage"
        )
    return include_usage


# ---------------------------------------------------------------- parsing


def parse_json_body(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the request body must be UTF-8 encoded JSON") from None
    try:
        body = json.loads(text, parse_constant=_reject_json_constant)
    except (ValueError, RecursionError) as error:
        raise RequestError(f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(body)}")
    return body


def _reject_json_constant(name: str) -> None:
    # Python accepts NaN and Infinity, but they are not JSON and no sampler wants them.
    raise ValueError(f"{name} is not allowed in JSON")


def parse_chat_request(body: dict) -> GenerationRequest:
    _require_object_body(body)
    _require_single_choice(body)
    stream = _optional_bool(body, "stream", default=False)
    return GenerationRequest(
        kind="chat",
        model=_model(body),
        messages=_messages(body),
        prompt="",
        max_tokens=_chat_max_tokens(body),
        temperature=_temperature(body),
        top_p=_top_p(body),
        stop=_stop(body),
        seed=_seed(body),
        stream=stream,
        include_usage=_include_usage(body, stream),
    )


def parse_completion_request(body: dict) -> GenerationRequest:
    _require_object_body(body)
    _require_single_choice(body)
    stream = _optional_bool(body, "stream", default=False)
    return GenerationRequest(
        kind="completion",
        model=_model(body),
        messages=(),
        prompt=_prompt(body),
        max_tokens=_max_tokens(body, "max_tokens"),
        temperature=_temperature(body),
        top_p=_top_p(body),
        stop=_stop(body),
        seed=_seed(body),
        stream=stream,
        include_usage=_include_usage(body, stream),
    )


def _require_object_body(body: Any) -> None:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(body)}")


def _require_single_choice(body: dict) -> None:
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise RequestError(f"only n=1 is supported, got {_describe(n)}", param="n")


def _model(body: dict) -> str:
    model = body.get("model", _MISSING)
    if model is _MISSING:
        raise RequestError("'model' is required", param="model")
    if not isinstance(model, str) or not model:
        raise RequestError(f"'model' must be a non-empty string, got {_describe(model)}", param="model")
    return _valid_text(model, "model")


def _messages(body: dict) -> tuple[dict, ...]:
    messages = body.get("messages", _MISSING)
    if messages is _MISSING:
        raise RequestError("'messages' is required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            f"'messages' must be a non-empty list of message objects, got {_describe(messages)}", param="messages"
        )
    return tuple(_message(message, f"messages[{index}]") for index, message in enumerate(messages))


def _message(message: Any, param: str) -> dict:
    if not isinstance(message, dict):
        raise RequestError(f"'{param}' must be a message object, got {_describe(message)}", param=param)
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise RequestError(
            f"'{param}.role' must be one of {', '.join(CHAT_ROLES)}, got {_describe(role)}", param=f"{param}.role"
        )
    return {"role": role, "content": _message_content(message, role, f"{param}.content")}


def _message_content(message: dict, role: str, param: str) -> str:
    content = message.get("content")
    if content is None:
        if role == "assistant":  # assistant turns that only made tool calls carry no content
            return ""
        raise RequestError(f"'{param}' is required for a {role} message", param=param)
    if isinstance(content, str):
        return _valid_text(content, param)
    if isinstance(content, list):
        return "\n".join(_text_part(part, f"{param}[{index}]") for index, part in enumerate(content))
    raise RequestError(
        f"'{param}' must be a string or a list of text parts, got {_describe(content)}", param=param
    )


def _text_part(part: Any, param: str) -> str:
    if not isinstance(part, dict):
        raise RequestError(f"'{param}' must be a content part object, got {_describe(part)}", param=param)
    if part.get("type") != "text":
        raise RequestError(
            f"only text content is supported: '{param}.type' must be \"text\", got {_describe(part.get('type'))}",
            param=f"{param}.type",
        )
    text = part.get("text")
    if not isinstance(text, str):
        raise RequestError(f"'{param}.text' must be a string, got {_describe(text)}", param=f"{param}.text")
    return _valid_text(text, f"{param}.text")


def _prompt(body: dict) -> str:
    prompt = body.get("prompt", _MISSING)
    if prompt is _MISSING or prompt is None:
        raise RequestError("'prompt' is required", param="prompt")
    if isinstance(prompt, str):
        return _valid_text(prompt, "prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return _valid_text(prompt[0], "prompt")
    if isinstance(prompt, list) and prompt and all(_is_int(item) for item in prompt):
        raise RequestError("'prompt' as a list of token ids is not supported; send the text", param="prompt")
    if isinstance(prompt, list) and len(prompt) > 1:
        raise RequestError(
            f"only one prompt per request is supported, got a list of {len(prompt)}", param="prompt"
        )
    raise RequestError(
        f"'prompt' must be a string or a list holding exactly one string, got {_describe(prompt)}", param="prompt"
    )


def _chat_max_tokens(body: dict) -> int | None:
    newer = _max_tokens(body, "max_completion_tokens")
    older = _max_tokens(body, "max_tokens")
    return newer if newer is not None else older


def _max_tokens(body: dict, field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise RequestError(f"'{field}' must be a positive integer, got {_describe(value)}", param=field)
    if value > MAX_TOKENS_LIMIT:
        raise RequestError(f"'{field}' must be at most {MAX_TOKENS_LIMIT}, got {value}", param=field)
    return value


def _temperature(body: dict) -> float:
    return _number_in_range(body, "temperature", DEFAULT_TEMPERATURE, lambda v: 0 <= v <= 2, "between 0 and 2")


def _top_p(body: dict) -> float:
    return _number_in_range(body, "top_p", DEFAULT_TOP_P, lambda v: 0 < v <= 1, "greater than 0 and at most 1")


def _number_in_range(body: dict, field: str, default: float, in_range, expected: str) -> float:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{field}' must be a number, got {_describe(value)}", param=field)
    if not in_range(value):  # also rejects NaN, which compares false with everything
        raise RequestError(f"'{field}' must be a number {expected}, got {_describe(value)}", param=field)
    return float(value)


def _seed(body: dict) -> int | None:
    seed = body.get("seed")
    if seed is None:
        return None
    if not _is_int(seed) or not SEED_MIN <= seed <= SEED_MAX:
        raise RequestError(f"'seed' must be a 64-bit integer or null, got {_describe(seed)}", param="seed")
    return seed


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise RequestError(
            f"'stop' must be null, a string or a list of strings, got {_describe(stop)}", param="stop"
        )
    if len(stop) > MAX_STOP_SEQUENCES:
        raise RequestError(
            f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stop)}", param="stop"
        )
    # An empty stop sequence would match at once and end every generation before it starts.
    return tuple(_valid_text(item, "stop") for item in stop if item)


def _include_usage(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    if not isinstance(options, dict):
        raise RequestError(
            f"'stream_options' must be an object or null, got {_describe(options)}", param="stream_options"
        )
    return _optional_bool(options, "include_usage", default=False, param="stream_options.include_usage")


def _optional_bool(body: dict, field: str, *, default: bool, param: str | None = None) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        param = param or field
        raise RequestError(f"'{param}' must be a boolean, got {_describe(value)}", param=param)
    return value


def _valid_text(text: str, param: str) -> str:
    # JSON escapes can smuggle in lone surrogates, which no tokenizer can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"'{param}' contains invalid Unicode (a lone surrogate)", param=param) from None
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _describe(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = _json_type(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- responses


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


def chat_completion(id: str, created: int, model: str, text: str, finish_reason: str, usage: Usage) -> dict:
    _check_finish_reason(finish_reason, CHAT_FINISH_REASONS)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish_reason,
        "logprobs": None,
    }
    return _envelope(id, "chat.completion", created, model, [choice]) | {"usage": usage.to_dict()}


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
