"""The generation request: read from an OpenAI body, and to and from the form it crosses the mesh in."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe, json_type
from meshdesk.core.openai_api.fields import (is_int, read_chat_max_tokens, read_include_usage,
                                             read_max_tokens, read_messages, read_model, read_optional_bool,
                                             read_penalty, read_prompt, read_seed, read_stop, read_temperature,
                                             read_top_p)
from meshdesk.core.openai_api.embeddings import read_embedding_input
from meshdesk.core.openai_api.known_fields import check_known_fields
from meshdesk.core.openai_api.response_format import read_response_format, response_format_to_body
from meshdesk.core.openai_api.tools import (check_grammar_tools, message_to_body, read_tool_choice, read_tools,
                                            tool_choice_to_body, tools_to_body)

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
    # Tools (`tools.py`): each {"name", "description", "parameters": a JSON Schema object}.
    tools: tuple[dict, ...] = ()
    tool_choice: str = "auto"  # "auto", "none", "required" or "function" (then `tool_name`)
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    # None (text), {"type": "json_object"} or {"type": "json_schema", "name", "schema", "strict"}
    response_format: dict | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # The texts of an "embedding" request (`embeddings.py`); empty for every other kind.
    input: tuple[str, ...] = ()

    @property
    def grammar_needed(self) -> bool:
        """Whether the answer is generated under a grammar (a forced call, or JSON): such an
        answer cannot be carried on from its text by another host (`node.resume`)."""
        return self.response_format is not None or (
            bool(self.tools) and self.tool_choice in ("required", "function"))

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
            "tools": [dict(tool) for tool in self.tools],
            "tool_choice": self.tool_choice,
            "tool_name": self.tool_name,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": self.response_format,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        if self.continue_from is not None:
            wire["continue_from"] = self.continue_from
        if self.kind == "embedding":
            wire["input"] = list(self.input)
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
        if kind == "embedding":
            _require_wire_empty(data, "messages", [])
            _require_wire_empty(data, "prompt", "")
            return parse_embedding_request({key: data[key] for key in ("model", "input") if key in data})
        raise RequestError(f"'kind' must be \"chat\", \"completion\" or \"embedding\", got {describe(kind)}",
                           param="kind")


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
    body = {key: data[key] for key in ("model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream",
                                       "presence_penalty", "frequency_penalty") if key in data}
    if input_field in data:
        body[input_field] = data[input_field]
    if input_field == "messages" and isinstance(data.get("messages"), list):
        body["messages"] = [message_to_body(message) if isinstance(message, dict) else message
                            for message in data["messages"]]
    if _wire_include_usage(data):
        body["stream_options"] = {"include_usage": True}
    if data["kind"] == "chat":
        _wire_tools_to_body(data, body)
    else:
        for field, empty in (("tools", []), ("response_format", None)):
            if data.get(field, empty) not in (empty, None, []):
                raise RequestError(f"'{field}' must be empty for a completion request", param=field)
    return body


def _wire_tools_to_body(data: dict, body: dict) -> None:
    tools = data.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise RequestError(f"'tools' must be a list of tool objects, got {describe(tools)}", param="tools")
    if tools:
        body["tools"] = tools_to_body(tuple(tools))
    choice, name = data.get("tool_choice", "auto"), data.get("tool_name")
    if choice == "function":
        body["tool_choice"] = tool_choice_to_body(choice, name)
    elif name is not None:
        raise RequestError("'tool_name' is only allowed when 'tool_choice' is \"function\"", param="tool_name")
    elif choice != "auto":
        body["tool_choice"] = choice
    for field in ("parallel_tool_calls",):
        if field in data:
            body[field] = data[field]
    response_format = data.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict) or response_format.get("type") not in ("json_object", "json_schema"):
            raise RequestError(f"'response_format' must be null, json_object or json_schema, "
                               f"got {describe(response_format)}", param="response_format")
        body["response_format"] = response_format_to_body(response_format) \
            if response_format["type"] == "json_object" else _wire_schema_body(response_format)


def _wire_schema_body(response_format: dict) -> dict:
    return {"type": "json_schema", "json_schema": {key: response_format.get(key)
                                                   for key in ("name", "schema", "strict")}}


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
    read_model(body), read_messages(body)  # a body without them is told so first
    check_known_fields(body, "chat")
    _require_single_choice(body)
    stream = read_optional_bool(body, "stream", default=False)
    tools = read_tools(body)
    tool_choice, tool_name = read_tool_choice(body, tools)
    response_format = read_response_format(body)
    check_grammar_tools(tools, tool_choice, tool_name, response_format)
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
        tools=tools,
        tool_choice=tool_choice,
        tool_name=tool_name,
        parallel_tool_calls=read_optional_bool(body, "parallel_tool_calls", default=True),
        response_format=response_format,
        presence_penalty=read_penalty(body, "presence_penalty"),
        frequency_penalty=read_penalty(body, "frequency_penalty"),
    )


def parse_completion_request(body: dict) -> GenerationRequest:
    _require_object_body(body)
    read_model(body), read_prompt(body)
    check_known_fields(body, "completion")
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
        presence_penalty=read_penalty(body, "presence_penalty"),
        frequency_penalty=read_penalty(body, "frequency_penalty"),
    )


def parse_embedding_request(body: dict) -> GenerationRequest:
    """The texts of POST /v1/embeddings (`embeddings.read_embedding_options` reads the rest)."""
    _require_object_body(body)
    return GenerationRequest(kind="embedding", model=read_model(body), messages=(), prompt="", max_tokens=None,
                             temperature=0.0, top_p=1.0, stop=(), seed=None, stream=False, include_usage=False,
                             input=read_embedding_input(body))


def _require_object_body(body: Any) -> None:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {json_type(body)}")


def _require_single_choice(body: dict) -> None:
    n = body.get("n")
    if n is not None and (not is_int(n) or n != 1):
        raise RequestError(f"only n=1 is supported, got {describe(n)}", param="n")
