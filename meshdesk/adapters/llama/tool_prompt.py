"""Tools, tool calls and tool results into the messages a GGUF's chat template renders.

A template that takes tools (one that reads the `tools` variable; SmolLM2's, and the fallbacks
for GGUFs without a template, do not) gets them in OpenAI's shape, and the calls and results
of earlier turns the way such templates read them (`tool_calls` with `function.arguments` an
object; `tool` messages with `tool_call_id` and `name`). Any other template gets a Hermes-style
system prompt naming the tools (the `<tools>` block and the `<tool_call>` form that
`core.tool_calls` parses and `grammar.py` constrains to), earlier calls as `<tool_call>` text
in the assistant's turn, and results as a user turn of `<tool_response>` blocks.

With `tool_choice` "none" the model is not shown the tools (as OpenAI: it answers in text);
earlier calls and results are still rendered, so the conversation reads as it happened.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import jinja2
import jinja2.meta

TOOLS_WORD = re.compile(r"\btools\b")


def template_takes_tools(template: str) -> bool:
    """Whether the chat template reads a `tools` variable."""
    environment = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    try:
        return "tools" in jinja2.meta.find_undeclared_variables(environment.parse(template))
    except jinja2.TemplateSyntaxError:  # an extension this plain environment lacks
        return bool(TOOLS_WORD.search(template))


@dataclass(frozen=True)
class ChatInput:
    """The formatter's keyword arguments: the messages, and `tools` when the template takes them."""

    messages: list[dict]
    extra: dict = field(default_factory=dict)


def openai_tools(tools) -> list[dict]:
    return [{"type": "function", "function": {"name": tool["name"], "description": tool.get("description", ""),
                                              "parameters": tool["parameters"]}} for tool in tools]


def chat_input(request, takes_tools: bool) -> ChatInput:
    tools = tuple(request.tools)
    choice = request.tool_choice
    shown = tools if choice != "none" else ()
    messages = list(request.messages)
    if takes_tools:
        rendered = template_messages(messages)
        return ChatInput(rendered, {"tools": openai_tools(shown)} if shown else {})
    rendered = text_messages(messages)
    if shown:
        rendered = with_system_prompt(rendered, tool_system_prompt(shown, choice, request.tool_name))
    return ChatInput(rendered)


def _arguments(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def template_messages(messages: list[dict]) -> list[dict]:
    names_by_id: dict[str, str] = {}
    rendered = []
    for message in messages:
        message = dict(message)
        if message.get("content") is None:
            message["content"] = ""
        if message.get("tool_calls"):
            names_by_id |= {call["id"]: call["name"] for call in message["tool_calls"]}
            message["tool_calls"] = [{"id": call["id"], "type": "function",
                                      "function": {"name": call["name"], "arguments": _arguments(call["arguments"])}}
                                     for call in message["tool_calls"]]
        if message["role"] == "tool" and "name" not in message and message.get("tool_call_id") in names_by_id:
            message["name"] = names_by_id[message["tool_call_id"]]
        rendered.append(message)
    return rendered


def call_text(call: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": call["name"], "arguments": _arguments(call["arguments"])},
                                        ensure_ascii=False) + "\n</tool_call>"


def text_messages(messages: list[dict]) -> list[dict]:
    """Calls as `<tool_call>` text, and each run of tool results as one user turn."""
    rendered: list[dict] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            parts = ([content] if content else []) + [call_text(call) for call in message["tool_calls"]]
            rendered.append({"role": "assistant", "content": "\n".join(parts)})
        elif role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if rendered and rendered[-1].get("tool_results"):
                rendered[-1]["content"] += "\n" + block
            else:
                rendered.append({"role": "user", "content": block, "tool_results": True})
        else:
            rendered.append({"role": role, "content": content})
    return [{key: value for key, value in message.items() if key != "tool_results"} for message in rendered]


def tool_system_prompt(tools, choice: str, name: str | None) -> str:
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in openai_tools(tools))
    if choice == "function":
        rule = f"You must call the function {name}."
    elif choice == "required":
        rule = "You must call at least one function."
    else:
        rule = "Call a function when it helps; otherwise answer directly."
    return ("# Tools\n\nYou may call one or more functions to assist with the user query. " + rule +
            "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            + listed + "\n</tools>\n\nFor each function call, return a json object with function name and "
            "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def with_system_prompt(messages: list[dict], prompt: str) -> list[dict]:
    """The prompt after the client's own system message, or as a new first message."""
    if messages and messages[0]["role"] in ("system", "developer"):
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{prompt}".lstrip())
        return [first, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]
