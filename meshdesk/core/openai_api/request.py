"""The generation request: read from an OpenAI body, and to and from the form it crosses the mesh in."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe, json_type
from meshdesk.core.openai_api.fields import (is_int, read_chat_max_tokens, read_include_usage,
                                             read_max_tokens, read_messages, read_model, read_optional_bool,
                                             read_prompt, read_seed, read_stop, read_temperature, read_top_p)

MAX_CONTINUATION_CHARS = 4 * 1024 * 1024  # an answer's text so far, as long as a request body


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
    # The answer's text so far, when a new host carries on an answer whose host was lost
    # (`core.continuation`): set by the node, over the mesh and to the child, never from HTTP.
    continue_from: str | None = None

    def to_wire(self) -> dict:
        wire = {
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
        if self.continue_from is not None:
            wire["continue_from"] = self.continue_from
        return wire

    @classmethod
    def from_wire(cls, data: dict) -> GenerationRequest:
        # Rebuilding an OpenAI body and reparsing it keeps one set of validation rules.
        if not isinstance(data, dict):
            raise RequestError(f"a wire request must be an object, got {describe(data)}")
        kind = data.get("kind")
        if kind == "chat":
            _require_wire_empty(data, "prompt", "")
            return _continued(parse_chat_request(_wire_to_body(data, "messages")), data)
        if kind == "completion":
            _require_wire_empty(data, "messages", [])
            return _continued(parse_completion_request(_wire_to_body(data, "prompt")), data)
        raise RequestError(f"'kind' must be \"chat\" or \"completion\", got {describe(kind)}", param="kind")


def _continued(request: GenerationRequest, data: dict) -> GenerationRequest:
    continue_from = data.get("continue_from")
    if continue_from is None:
        return request
    if not isinstance(continue_from, str) or len(continue_from) > MAX_CONTINUATION_CHARS:
        raise RequestError(f"'continue_from' must be a string of at most {MAX_CONTINUATION_CHARS} "
                           f"characters, got {describe(continue_from)}", param="continue_from")
    return replace(request, continue_from=continue_from)


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
            f"'include_usage' must be a boolean, got {describe(include_usage)}", param="include_usage"
        )
    return include_usage


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
        raise RequestError(f"the request body must be a JSON object, got {json_type(body)}")
    return body


def _reject_json_constant(name: str) -> None:
    # Python accepts NaN and Infinity, but they are not JSON and no sampler wants them.
    raise ValueError(f"{name} is not allowed in JSON")


def parse_chat_request(body: dict) -> GenerationRequest:
    _require_object_body(body)
    _require_single_choice(body)
    stream = read_optional_bool(body, "stream", default=False)
    return GenerationRequest(
        kind="chat",
        model=read_model(body),
        messages=read_messages(body),
        prompt="",
        max_tokens=read_chat_max_tokens(body),
        temperature=read_temperature(body),
        top_p=read_top_p(body),
        stop=read_stop(body),
        seed=read_seed(body),
        stream=stream,
        include_usage=read_include_usage(body, stream),
    )


def parse_completion_request(body: dict) -> GenerationRequest:
    _require_object_body(body)
    _require_single_choice(body)
    stream = read_optional_bool(body, "stream", default=False)
    return GenerationRequest(
        kind="completion",
        model=read_model(body),
        messages=(),
        prompt=read_prompt(body),
        max_tokens=read_max_tokens(body, "max_tokens"),
        temperature=read_temperature(body),
        top_p=read_top_p(body),
        stop=read_stop(body),
        seed=read_seed(body),
        stream=stream,
        include_usage=read_include_usage(body, stream),
    )


def _require_object_body(body: Any) -> None:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {json_type(body)}")


def _require_single_choice(body: dict) -> None:
    n = body.get("n")
    if n is not None and (not is_int(n) or n != 1):
        raise RequestError(f"only n=1 is supported, got {describe(n)}", param="n")
