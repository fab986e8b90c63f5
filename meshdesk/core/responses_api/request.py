"""A Responses API body (`POST /v1/responses`) read into the generation request.

The body is turned into the chat completions body that asks the same thing and read by
`parse_chat_request`, so tools, tool choices and response formats follow one set of rules
whichever API they came through. What only the Responses API has is read here: `input` items
and `instructions` (`input_items`), flat function tools, `text.format`, `max_output_tokens`.

This node keeps no state between requests: `previous_response_id`, `conversation` and
`store: true` are refused by name, never quietly dropped. Fields that cannot change the answer
(`metadata`, `user`, `prompt_cache_key`, ...) are accepted and ignored."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe
from meshdesk.core.openai_api.fields import read_max_tokens, read_model, read_optional_bool
from meshdesk.core.openai_api.request import GenerationRequest, parse_chat_request
from meshdesk.core.openai_api.tools import require_function_tool
from meshdesk.core.responses_api.input_items import input_messages

READ_FIELDS = {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
               "max_output_tokens", "temperature", "top_p", "stream", "store", "previous_response_id",
               "include", "truncation", "background", "max_tool_calls", "top_logprobs",
               "stream_options"}
# Accepted and ignored, as the chat side does: none can change the answer. `reasoning` asks a
# reasoning model how long to think (and for summaries of it); no model served here thinks aloud.
IGNORED_FIELDS = {"metadata", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
                  "service_tier", "reasoning", "client_metadata"}
# `include` values that ask for nothing this node could leave out of its answer.
HARMLESS_INCLUDES = {"reasoning.encrypted_content"}
TEXT_FORMATS = ("text", "json_object", "json_schema")


@dataclass(frozen=True)
class ResponsesCall:
    """The generation request, and the settings a response object repeats back (`echo`)."""

    request: GenerationRequest
    echo: dict


def parse_responses_request(body: Any) -> ResponsesCall:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {describe(body)}")
    _refuse_unknown_and_stateful(body)
    chat: dict = {"model": read_model(body), "messages": input_messages(body),
                  "stream": read_optional_bool(body, "stream", default=False)}
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            chat[field] = body[field]
    max_output_tokens = read_max_tokens(body, "max_output_tokens")
    if max_output_tokens is not None:
        chat["max_tokens"] = max_output_tokens
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    text_format = _text_format(body.get("text"))
    if text_format is not None:
        chat["response_format"] = text_format
    request = parse_chat_body(chat, RESPONSES_RENAMES)
    return ResponsesCall(request, _echo(body, request))


RESPONSES_RENAMES = (("max_tokens", "max_output_tokens"), ("response_format.json_schema", "text.format"),
                     ("response_format", "text.format"), ("tool_choice.function", "tool_choice"),
                     ("tools[].function", "tools[]"))


def parse_chat_body(chat: dict, renames: tuple[tuple[str, str], ...]) -> GenerationRequest:
    """`parse_chat_request`, its errors naming the fields of the body the chat one came from:
    `renames` pairs a chat field's prefix with the original's (`[]` stands for any index)."""
    try:
        return parse_chat_request(chat)
    except RequestError as error:
        param = renamed(error.param, renames)
        message = error.message.replace(f"'{error.param}'", f"'{param}'") if error.param else error.message
        raise RequestError(message, status=error.status, type=error.type, param=param,
                           code=error.code) from None


def renamed(param: str | None, renames: tuple[tuple[str, str], ...]) -> str | None:
    if param is None:
        return None
    index = re.match(r"[a-z_]+(\[\d+\])", param)
    for chat_name, name in renames:
        if index:
            chat_name, name = chat_name.replace("[]", index.group(1)), name.replace("[]", index.group(1))
        if param == chat_name or param.startswith(chat_name + "."):
            return name + param[len(chat_name):]
    return param


def _refuse_unknown_and_stateful(body: dict) -> None:
    unknown = sorted(set(body) - READ_FIELDS - IGNORED_FIELDS)
    if unknown:
        raise RequestError(f"'{unknown[0]}' is not supported by this node's Responses API", param=unknown[0])
    if body.get("previous_response_id") is not None:
        raise RequestError("'previous_response_id' is not supported: this node keeps no responses; "
                           "send the whole conversation as 'input' items", param="previous_response_id")
    if body.get("store") not in (None, False):
        raise RequestError("'store' must be false or left out: this node keeps no responses", param="store")
    if body.get("background") not in (None, False):
        raise RequestError("'background' responses are not supported", param="background")
    if body.get("truncation") not in (None, "disabled"):
        raise RequestError(f"'truncation' must be \"disabled\", got {describe(body['truncation'])}",
                           param="truncation")
    if body.get("max_tool_calls") is not None:
        raise RequestError("'max_tool_calls' is not supported", param="max_tool_calls")
    if body.get("top_logprobs") not in (None, 0):
        raise RequestError("'top_logprobs' must be null or 0 (log probabilities are not supported)",
                           param="top_logprobs")
    include = body.get("include")
    if include is not None and (not isinstance(include, list) or set(include) - HARMLESS_INCLUDES):
        raise RequestError(f"'include' may only hold {sorted(HARMLESS_INCLUDES)}, got {describe(include)}",
                           param="include")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_obfuscation"}):
        raise RequestError(f"'stream_options' may only hold include_obfuscation, got {describe(options)}",
                           param="stream_options")


def _tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RequestError(f"'tools' must be a list of tool objects, got {describe(tools)}", param="tools")
    return [_tool(tool, f"tools[{index}]") for index, tool in enumerate(tools)]


def _tool(tool: Any, param: str) -> dict:
    require_function_tool(tool, param)
    extra = sorted(set(tool) - {"type", "name", "description", "parameters", "strict"})
    if extra:
        raise RequestError(f"'{param}.{extra[0]}' is not supported on a function tool",
                           param=f"{param}.{extra[0]}")
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        extra = sorted(set(choice) - {"type", "name"})
        if extra:
            raise RequestError(f"'tool_choice.{extra[0]}' is not supported", param=f"tool_choice.{extra[0]}")
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, str):
        return choice
    raise RequestError("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                       f"{{\"type\": \"function\", \"name\": ...}}, got {describe(choice)}", param="tool_choice")


def _text_format(text: Any) -> dict | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise RequestError(f"'text' must be an object, got {describe(text)}", param="text")
    extra = sorted(set(text) - {"format", "verbosity"})
    if extra:
        raise RequestError(f"'text.{extra[0]}' is not supported", param=f"text.{extra[0]}")
    if text.get("verbosity") not in (None, "medium"):
        raise RequestError("'text.verbosity' is not supported by the models this node serves",
                           param="text.verbosity")
    given = text.get("format")
    if given is None:
        return None
    if not isinstance(given, dict) or given.get("type") not in TEXT_FORMATS:
        raise RequestError(f"'text.format.type' must be one of {', '.join(TEXT_FORMATS)}, got "
                           f"{describe(given.get('type') if isinstance(given, dict) else given)}",
                           param="text.format.type")
    if given["type"] == "text":
        return None
    if given["type"] == "json_object":
        return {"type": "json_object"}
    schema = {key: given[key] for key in ("name", "schema", "strict", "description") if key in given}
    return {"type": "json_schema", "json_schema": schema}


def _echo(body: dict, request: GenerationRequest) -> dict:
    """What a response object says about the request it answers."""
    tools = [{"type": "function", "name": tool["function"]["name"],
              "description": tool["function"].get("description"),
              "parameters": tool["function"].get("parameters"), "strict": tool["function"].get("strict")}
             for tool in _tools(body.get("tools"))]
    text = body.get("text") if isinstance(body.get("text"), dict) and body["text"].get("format") else None
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": request.max_tokens,
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "store": False,
        "temperature": request.temperature,
        "text": text or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": tools,
        "top_p": request.top_p,
        "truncation": "disabled",
        "user": body.get("user"),
    }
