"""An Anthropic Messages body (`POST /v1/messages`) read into the generation request.

As for the Responses API, the body becomes the chat completions body that asks the same thing
and `parse_chat_request` reads it, so tools and tool choices follow one set of rules. What is
Anthropic's own is read here: the required `max_tokens`, `system`, content blocks (`content`),
`{name, description, input_schema}` tools, `tool_choice` {auto|any|tool|none} with
`disable_parallel_tool_use`, `stop_sequences`, and a temperature from 0 to 1.

`output_config.format` (a JSON Schema) is the chat side's json_schema response format. Fields
that cannot change the answer (`metadata`, `service_tier`, `cache_control`, ...) are accepted
and ignored; `thinking` only as disabled or adaptive; anything else is refused by name, as
Anthropic's own API refuses a field it does not know."""

from __future__ import annotations

from typing import Any

from meshdesk.core.anthropic_api.content import chat_messages, system_messages
from meshdesk.core.openai_api.errors import RequestError, describe
from meshdesk.core.openai_api.fields import is_int, read_model, read_optional_bool
from meshdesk.core.openai_api.request import GenerationRequest
from meshdesk.core.responses_api.request import parse_chat_body

READ_FIELDS = {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p",
               "stream", "tools", "tool_choice", "thinking", "output_config", "context_management"}
# Accepted and ignored: bookkeeping, routing and cache hints that cannot change the answer.
IGNORED_FIELDS = {"metadata", "service_tier", "cache_control", "inference_geo", "speed", "user_profile_id",
                  "workspace_id", "diagnostics"}
# "adaptive" lets the model decide whether to think: the models served here decide not to.
QUIET_THINKING = ("disabled", "adaptive")
# `defer_loading` marks a tool the model may load later (tool search): here it is there from the start.
TOOL_KEYS = {"name", "description", "input_schema", "type", "cache_control", "strict", "defer_loading"}
CHOICE_TYPES = {"auto": "auto", "any": "required", "none": "none", "tool": "function"}
MAX_STOP_SEQUENCES = 4  # what the chat side takes
MESSAGES_RENAMES = (("tools[].function.parameters", "tools[].input_schema"), ("tools[].function", "tools[]"),
                    ("tool_choice.function", "tool_choice"), ("stop", "stop_sequences"),
                    ("response_format.json_schema.schema", "output_config.format.schema"),
                    ("response_format", "output_config.format"))


def parse_messages_request(body: Any, *, counting: bool = False) -> GenerationRequest:
    """`counting`: a `count_tokens` body, which has no `max_tokens` and asks for no answer."""
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {describe(body)}")
    allowed = READ_FIELDS - {"max_tokens", "stop_sequences", "temperature", "top_p", "stream"} if counting \
        else READ_FIELDS
    unknown = sorted(set(body) - allowed - IGNORED_FIELDS)
    if unknown:
        raise RequestError(f"{unknown[0]}: Extra inputs are not permitted", param=unknown[0])
    _refuse_thinking(body.get("thinking"))
    _refuse_context_edits(body.get("context_management"))
    chat: dict = {"model": read_model(body), "messages": system_messages(body) + chat_messages(body),
                  "max_tokens": 1 if counting else _max_tokens(body),
                  "stream": False if counting else read_optional_bool(body, "stream", default=False)}
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1:
            raise RequestError(f"temperature: must be a number from 0 to 1, got {describe(temperature)}",
                               param="temperature")
        chat["temperature"] = temperature
    if body.get("top_p") is not None:
        chat["top_p"] = body["top_p"]
    stop = _stop_sequences(body.get("stop_sequences"))
    if stop:
        chat["stop"] = stop
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    chat.update(_tool_choice(body.get("tool_choice")))
    output_format = _output_format(body.get("output_config"))
    if output_format is not None:
        chat["response_format"] = output_format
    return parse_chat_body(chat, MESSAGES_RENAMES)


def _refuse_thinking(thinking: Any) -> None:
    if thinking is None or (isinstance(thinking, dict) and thinking.get("type") in QUIET_THINKING):
        return
    raise RequestError("thinking: the models this node serves do not think aloud; send "
                       "{\"type\": \"disabled\"} or leave it out", param="thinking")


def _refuse_context_edits(management: Any) -> None:
    """Edits that clear thinking blocks are accepted (no turn here has any); any other edit
    would change what the model reads, which this node does not do."""
    if management is None:
        return
    edits = management.get("edits") if isinstance(management, dict) else None
    if not isinstance(edits, list) or set(management) - {"edits"} or not all(
            isinstance(edit, dict) and str(edit.get("type", "")).startswith("clear_thinking_") for edit in edits):
        raise RequestError("context_management: only edits that clear thinking blocks are supported, "
                           f"got {describe(management)}", param="context_management")


def _output_format(config: Any) -> dict | None:
    """`output_config.format` (a JSON Schema the answer must follow) as the chat body's
    `response_format`; `effort` is accepted and ignored, as the chat side ignores reasoning_effort."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise RequestError(f"output_config: must be an object, got {describe(config)}", param="output_config")
    extra = sorted(set(config) - {"effort", "format"})
    if extra:
        raise RequestError(f"output_config.{extra[0]}: Extra inputs are not permitted",
                           param=f"output_config.{extra[0]}")
    given = config.get("format")
    if given is None:
        return None
    if not isinstance(given, dict) or given.get("type") != "json_schema" or set(given) - {"type", "schema"}:
        raise RequestError(f"output_config.format: must be {{\"type\": \"json_schema\", \"schema\": ...}}, "
                           f"got {describe(given)}", param="output_config.format")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": given.get("schema"), "strict": True}}


def _max_tokens(body: dict) -> int:
    value = body.get("max_tokens")
    if value is None:
        raise RequestError("max_tokens: Field required", param="max_tokens")
    if not is_int(value) or value < 1:
        raise RequestError(f"max_tokens: must be a positive integer, got {describe(value)}", param="max_tokens")
    return value


def _stop_sequences(stop: Any) -> list[str]:
    if stop is None:
        return []
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise RequestError(f"stop_sequences: must be a list of strings, got {describe(stop)}",
                           param="stop_sequences")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise RequestError(f"stop_sequences: this node takes at most {MAX_STOP_SEQUENCES}, got {len(stop)}",
                           param="stop_sequences")
    return stop


def _tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RequestError(f"tools: must be a list of tools, got {describe(tools)}", param="tools")
    return [_tool(tool, f"tools[{index}]") for index, tool in enumerate(tools)]


def _tool(tool: Any, param: str) -> dict:
    if not isinstance(tool, dict):
        raise RequestError(f"{param}: must be a tool object, got {describe(tool)}", param=param)
    if tool.get("type") not in (None, "custom"):
        raise RequestError(f"{param}.type: {describe(tool.get('type'))} (a tool Anthropic's servers run) is not "
                           "supported; this node takes client tools {name, description, input_schema}",
                           param=f"{param}.type")
    extra = sorted(set(tool) - TOOL_KEYS)
    if extra:
        raise RequestError(f"{param}.{extra[0]}: Extra inputs are not permitted", param=f"{param}.{extra[0]}")
    if "input_schema" not in tool:
        raise RequestError(f"{param}.input_schema: Field required", param=f"{param}.input_schema")
    function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> dict:
    """The chat body's `tool_choice` and `parallel_tool_calls`."""
    if choice is None:
        return {}
    if not isinstance(choice, dict) or choice.get("type") not in CHOICE_TYPES:
        raise RequestError(f"tool_choice: must be {{\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}}, "
                           f"got {describe(choice)}", param="tool_choice")
    extra = sorted(set(choice) - {"type", "name", "disable_parallel_tool_use"})
    if extra:
        raise RequestError(f"tool_choice.{extra[0]}: Extra inputs are not permitted",
                           param=f"tool_choice.{extra[0]}")
    chosen = CHOICE_TYPES[choice["type"]]
    fields: dict = {"tool_choice": chosen}
    if chosen == "function":
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice.get("name") is not None:
        raise RequestError("tool_choice.name: only allowed with type \"tool\"", param="tool_choice.name")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        if not isinstance(disable, bool):
            raise RequestError(f"tool_choice.disable_parallel_tool_use: must be a boolean, got {describe(disable)}",
                               param="tool_choice.disable_parallel_tool_use")
        fields["parallel_tool_calls"] = not disable
    return fields
