"""The generated text split into content that streams and tool calls that travel whole.

When the request offers tools (and `tool_choice` is not "none"), the model's text goes through
the streaming splitter of `meshdesk.core.tool_calls`: text that cannot start a call streams as
deltas at once, a call is held back until it is complete, and the calls go in the finish event
(`finish_reason` "tool_calls"), each with an id made here (core makes no random values).
Without tools the text passes through untouched.
"""

from __future__ import annotations

import secrets

from meshdesk.core import tool_calls


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


class PlainOutput:
    def feed(self, text: str) -> str:
        return text

    def finish(self) -> tuple[str, list[dict]]:
        return "", []


class ToolOutput:
    def __init__(self, tool_names: list[str]):
        self.splitter = tool_calls.ToolCallSplitter(tool_names, new_id=call_id)

    def feed(self, text: str) -> str:
        return self.splitter.feed(text)

    def finish(self) -> tuple[str, list[dict]]:
        return self.splitter.close()


def output_for(request) -> PlainOutput | ToolOutput:
    tools = tuple(request.tools)
    if not tools or request.tool_choice == "none":
        return PlainOutput()
    return ToolOutput([tool["name"] for tool in tools])
