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
    """`forced`: "required" or a named function, so the grammar allowed calls only: text left
    after the complete calls is a call cut short by max_tokens, and is dropped."""

    def __init__(self, tool_names: list[str], forced: bool = False):
        self.splitter = tool_calls.ToolCallSplitter(tool_names, new_id=call_id)
        self.forced = forced

    def feed(self, text: str) -> str:
        return self.splitter.feed(text)

    def finish(self) -> tuple[str, list[dict]]:
        tail, calls = self.splitter.close()
        return ("" if self.forced and calls else tail), calls


# The texts that start or shape a call; some vocabularies make them control tokens (Mistral's
# [TOOL_CALLS] [ARGS] [CALL_ID], Llama 3.1's <|python_tag|>), which streamed text drops.
MARKER_TEXTS = (*tool_calls.MARKERS, tool_calls.HERMES_CLOSE, "[ARGS]", "[CALL_ID]")


def marker_tokens(llama) -> frozenset:
    """This model's tokens that are a whole marker and that plain detokenizing renders as nothing."""
    cached = getattr(llama, "_meshdesk_marker_tokens", None)
    if cached is None:
        found = set()
        for marker in MARKER_TEXTS:
            tokens = llama.tokenize(marker.encode("utf-8"), add_bos=False, special=True)
            if len(tokens) == 1 and llama._model.detokenize(tokens, special=False) == b"":
                found.add(tokens[0])
        cached = llama._meshdesk_marker_tokens = frozenset(found)
    return cached


def output_for(request) -> PlainOutput | ToolOutput:
    tools = tuple(request.tools)
    if not tools or request.tool_choice == "none":
        return PlainOutput()
    forced = request.tool_choice in ("required", "function") and not request.continue_from
    return ToolOutput([tool["name"] for tool in tools], forced)
