"""Tools in a chat body: `tools`, `tool_choice`, `parallel_tool_calls`, and the tool calls and
tool results that messages carry, each read from OpenAI's nested shape into the flat one the
request crosses the mesh in (and back: `*_to_body`, so `from_wire` reparses with these rules).

A tool is {"name", "description", "parameters"} (`parameters` a JSON Schema object); a call is
{"id", "name", "arguments"} (`arguments` JSON text). The legacy `functions` and `function_call`
are refused by name: a legacy client reads `message.function_call`, which we never write."""

from __future__ import annotations

import json
import re
from typing import Any

import meshdesk.core.json_schema_support as json_schema_support
from meshdesk.core.openai_api.errors import RequestError, describe, valid_text

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_CHOICES = ("auto", "none", "required", "function")
MAX_TOOLS = 128
MAX_CALL_ID = 256
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


def read_tools(body: dict) -> tuple[dict, ...]:
    _refuse_legacy(body)
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise RequestError(f"'tools' must be a list of tool objects, got {describe(tools)}", param="tools")
    if len(tools) > MAX_TOOLS:
        raise RequestError(f"'tools' may hold at most {MAX_TOOLS} tools, got {len(tools)}", param="tools")
    read = tuple(_tool(tool, f"tools[{index}]") for index, tool in enumerate(tools))
    seen: set[str] = set()
    for index, tool in enumerate(read):
        if tool["name"] in seen:
            raise RequestError(f"'tools[{index}].function.name' repeats the tool name {tool['name']!r}; "
                               "tool names must be unique", param=f"tools[{index}].function.name")
        seen.add(tool["name"])
    return read


def _refuse_legacy(body: dict) -> None:
    for field in ("functions", "function_call"):
        if body.get(field) is not None:
            raise RequestError(f"'{field}' (the deprecated function calling) is not supported; "
                               "send 'tools' and 'tool_choice' instead", param=field)


def require_function_tool(tool: Any, param: str) -> None:
    """A tool object of type "function" (chat's and the Responses API's shapes both)."""
    if not isinstance(tool, dict):
        raise RequestError(f"'{param}' must be a tool object, got {describe(tool)}", param=param)
    if tool.get("type") != "function":
        raise RequestError(f"only function tools are supported: '{param}.type' must be \"function\", "
                           f"got {describe(tool.get('type'))}", param=f"{param}.type")


def _tool(tool: Any, param: str) -> dict:
    require_function_tool(tool, param)
    function = tool.get("function")
    if not isinstance(function, dict):
        raise RequestError(f"'{param}.function' must be an object, got {describe(function)}",
                           param=f"{param}.function")
    return _function(function, f"{param}.function")


def _function(function: dict, param: str) -> dict:
    name = read_tool_name(function.get("name"), f"{param}.name")
    description = function.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise RequestError(f"'{param}.description' must be a string, got {describe(description)}",
                           param=f"{param}.description")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = dict(EMPTY_PARAMETERS)
    if not isinstance(parameters, dict):
        raise RequestError(f"'{param}.parameters' must be a JSON Schema object, got {describe(parameters)}",
                           param=f"{param}.parameters")
    checked_schema(json_schema_support.check_schema_bounds, parameters, f"{param}.parameters")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise RequestError(f"'{param}.strict' must be a boolean, got {describe(strict)}", param=f"{param}.strict")
    return {"name": name, "description": valid_text(description, f"{param}.description"), "parameters": parameters}


def checked_schema(check, schema: Any, param: str) -> Any:
    """`check` (from `core.json_schema_support`) on `schema`; its refusal is the client's 400."""
    try:
        return check(schema, param)
    except json_schema_support.SchemaError as error:
        raise RequestError(error.message, param=error.param) from None


def check_grammar_tools(tools: tuple[dict, ...], choice: str, name: str | None,
                        response_format: dict | None = None) -> None:
    """The schemas an answer's grammar is built from must be ones a grammar can hold, and all of
    them together small enough (`json_schema_support.MAX_GRAMMAR_COST`): with "required" or a
    named function the chosen tools'; with a response format, its schema and, when tool_choice is
    "auto", every tool's (the grammar lets the model call any of them instead)."""
    budget = json_schema_support.MAX_GRAMMAR_COST
    if response_format is not None and response_format.get("type") == "json_schema":
        budget -= checked_schema(json_schema_support.read_grammar_schema, response_format["schema"],
                                 "response_format.json_schema.schema")[1]
    if choice in ("required", "function"):
        chosen = [index for index, tool in enumerate(tools) if choice == "required" or tool["name"] == name]
    elif choice == "auto" and response_format is not None:
        chosen = list(range(len(tools)))
    else:
        return
    for index in chosen:
        param = f"tools[{index}].function.parameters"
        budget -= checked_schema(lambda schema, where: json_schema_support.read_grammar_schema(schema, where, budget),
                                 tools[index]["parameters"], param)[1]


def read_tool_name(name: Any, param: str) -> str:
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise RequestError(f"'{param}' must be 1 to 64 letters, digits, underscores or dashes, "
                           f"got {describe(name)}", param=param)
    return name


def read_tool_choice(body: dict, tools: tuple[dict, ...]) -> tuple[str, str | None]:
    """("auto" | "none" | "required" | "function", the function's name or None)."""
    choice = body.get("tool_choice")
    if choice is None:
        return "auto", None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise RequestError(f"'tool_choice' must be \"auto\", \"none\", \"required\" or a function "
                               f"object, got {describe(choice)}", param="tool_choice")
        if choice == "required" and not tools:
            raise RequestError("'tool_choice' \"required\" needs 'tools'", param="tool_choice")
        return choice, None
    if not isinstance(choice, dict) or choice.get("type") != "function" \
            or not isinstance(choice.get("function"), dict):
        raise RequestError("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                           f"{{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {describe(choice)}",
                           param="tool_choice")
    name = read_tool_name(choice["function"].get("name"), "tool_choice.function.name")
    if name not in {tool["name"] for tool in tools}:
        raise RequestError(f"'tool_choice.function.name' names {name!r}, which is not among 'tools'",
                           param="tool_choice.function.name")
    return "function", name


def tool_choice_to_body(choice: str, name: str | None) -> Any:
    if choice == "function":
        return {"type": "function", "function": {"name": name}}
    return choice


def tools_to_body(tools: tuple[dict, ...]) -> list[dict]:
    return [{"type": "function", "function": dict(tool)} for tool in tools]


def message_tool_fields(message: dict, role: str, param: str) -> dict:
    """What a message carries besides role and content: an assistant's tool calls, a tool
    result's `tool_call_id`, anyone's `name`."""
    fields: dict = {}
    name = message.get("name")
    if name is not None:
        if not isinstance(name, str) or not name or len(name) > 256:
            raise RequestError(f"'{param}.name' must be a non-empty string of at most 256 characters, "
                               f"got {describe(name)}", param=f"{param}.name")
        fields["name"] = valid_text(name, f"{param}.name")
    if message.get("function_call") is not None:
        raise RequestError(f"'{param}.function_call' (the deprecated function calling) is not supported; "
                           "send 'tool_calls'", param=f"{param}.function_call")
    calls = message.get("tool_calls")
    if calls is not None and role != "assistant":
        raise RequestError(f"'{param}.tool_calls' is only allowed on an assistant message",
                           param=f"{param}.tool_calls")
    if calls:  # [] is no calls, as some clients send it
        if not isinstance(calls, list):
            raise RequestError(f"'{param}.tool_calls' must be a list, got {describe(calls)}",
                               param=f"{param}.tool_calls")
        fields["tool_calls"] = [_call(call, f"{param}.tool_calls[{index}]") for index, call in enumerate(calls)]
    if role == "tool":
        fields["tool_call_id"] = _call_id(message.get("tool_call_id"), f"{param}.tool_call_id")
    elif message.get("tool_call_id") is not None:
        raise RequestError(f"'{param}.tool_call_id' is only allowed on a tool message",
                           param=f"{param}.tool_call_id")
    return fields


def _call(call: Any, param: str) -> dict:
    """Read from {"id", "type": "function", "function": {"name", "arguments"}}, or from the flat
    {"id", "name", "arguments"} the request crosses the mesh in."""
    if not isinstance(call, dict):
        raise RequestError(f"'{param}' must be a tool call object, got {describe(call)}", param=param)
    if "function" in call:
        if call.get("type", "function") != "function":
            raise RequestError(f"'{param}.type' must be \"function\", got {describe(call.get('type'))}",
                               param=f"{param}.type")
        function, where = call["function"], f"{param}.function"
        if not isinstance(function, dict):
            raise RequestError(f"'{where}' must be an object, got {describe(function)}", param=where)
    else:
        function, where = call, param
    return {"id": _call_id(call.get("id"), f"{param}.id"),
            "name": read_tool_name(function.get("name"), f"{where}.name"),
            "arguments": _arguments(function.get("arguments"), f"{where}.arguments")}


def _call_id(call_id: Any, param: str) -> str:
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID:
        raise RequestError(f"'{param}' must be a non-empty string of at most {MAX_CALL_ID} characters, "
                           f"got {describe(call_id)}", param=param)
    return valid_text(call_id, param)


def _arguments(arguments: Any, param: str) -> str:
    """JSON text of an object. An object is taken as it is (some clients send one), and an empty
    string as {} (what some providers write for a call without arguments)."""
    if isinstance(arguments, dict):
        checked_schema(json_schema_support.check_schema_bounds, arguments, param)
        return json.dumps(arguments, ensure_ascii=False)
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return "{}"
    if not isinstance(arguments, str):
        raise RequestError(f"'{param}' must be a JSON text, got {describe(arguments)}", param=param)
    try:
        json.loads(arguments)
    except (ValueError, RecursionError):
        raise RequestError(f"'{param}' must be a JSON text, got {describe(arguments)}", param=param) from None
    return valid_text(arguments, param)


def finish_tool_calls(finish: dict, new_id) -> list[dict]:
    """The calls a finish event carries ([{"id", "name", "arguments"}]), checked: they come from a
    model host, maybe another node's. A call without a usable id gets `new_id()`; anything else
    malformed is a ValueError (the host's fault, not the client's)."""
    calls = finish.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ValueError(f"a finish event's tool calls must be a list, got {describe(calls)}")
    checked = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) \
                or not TOOL_NAME.fullmatch(call["name"]) or not isinstance(call.get("arguments"), str):
            raise ValueError(f"a malformed tool call in a finish event: {describe(call)}")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID:
            call_id = new_id()
        checked.append({"id": call_id, "name": call["name"], "arguments": call["arguments"]})
    return checked


def checked_finish(finish: dict, parallel_tool_calls: bool, new_id,
                   reasons: tuple[str, ...] = ("stop", "length", "tool_calls")) -> dict:
    """A host's finish event as every API's answer may use it: its calls checked, each with an id
    (`finish_tool_calls`), only the first when the client asked for parallel_tool_calls false,
    finish_reason "tool_calls" whenever there are calls and one of `reasons` otherwise. A
    ValueError when the host sent what cannot be answered (a server error, not the client's)."""
    calls = finish_tool_calls(finish, new_id)
    if not parallel_tool_calls:
        calls = calls[:1]  # the client asked for one call at most
    reason = "tool_calls" if calls else finish.get("finish_reason") or "stop"
    if reason not in reasons or (reason == "tool_calls" and not calls):
        raise ValueError(f"the model host finished with {describe(reason)}")
    return {**finish, "finish_reason": reason, "tool_calls": calls}


def message_to_body(message: dict) -> dict:
    """A flat wire message in OpenAI's nested shape."""
    body = dict(message)
    if "tool_calls" in message:
        body["tool_calls"] = [{"id": call["id"], "type": "function",
                               "function": {"name": call["name"], "arguments": call["arguments"]}}
                              for call in message["tool_calls"]]
    return body
