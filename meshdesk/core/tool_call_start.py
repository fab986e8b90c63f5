"""How a model's answer opens, for `tool_calls.ToolCallSplitter`: whether it may be tool calls as
a whole (then it is held to the end), clearly is not (then it streams at once), or is too short
to tell. Pure; decided on the first few dozen characters at most."""

from __future__ import annotations

HERMES_OPEN = "<tool_call>"
MISTRAL = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"
FUNCTION_OPEN = "<function="
MARKERS = (HERMES_OPEN, MISTRAL, PYTHON_TAG, FUNCTION_OPEN)
CALL_KEYS = frozenset({"name", "arguments", "parameters", "type", "id", "function"})


def start_verdict(head: str, names: frozenset) -> bool | None:
    """For an answer starting with `head` (no leading space): True when it may be calls as a whole
    or opens with a marker (hold it all to the end), False when it clearly is neither (stream it),
    None when too little has come to tell."""
    if not head:
        return None
    if any(head.startswith(marker) for marker in MARKERS):
        return True
    if any(marker.startswith(head) for marker in MARKERS):
        return None
    if head.startswith("```"):  # a fence: ```json, ```JSON or bare, then the calls
        rest = head[3:]
        if rest.startswith(("json", "JSON")):
            rest = rest[4:]
        elif rest and ("json".startswith(rest) or "JSON".startswith(rest)):
            return None
        rest = rest.lstrip()
        return _json_verdict(rest, names) if rest else None
    if "```".startswith(head):
        return None
    return _json_verdict(head, names)


def _json_verdict(head: str, names: frozenset) -> bool | None:
    """`start_verdict` of a whole-answer call: an object whose first key is a call's, a list of
    them, or a Python list of calls to known tools (`[get_weather(city='Paris')]`)."""
    if head[0] == "{":
        return _object_verdict(head[1:].lstrip())
    if head[0] != "[":
        return False
    rest = head[1:].lstrip()
    if not rest:
        return None
    if rest[0] == "{":
        return _object_verdict(rest[1:].lstrip())
    if not (rest[0].isascii() and (rest[0].isalpha() or rest[0] == "_")):
        return None if rest[0] in "(#\\" else False  # what Python reads around a call: hold
    length = 0
    while length < len(rest) and length <= 64 and (rest[length].isascii() and rest[length].isalnum()
                                                   or rest[length] == "_"):
        length += 1
    name, after = rest[:length], rest[length:].lstrip()
    if not after:
        return None if any(tool.startswith(name) for tool in names) else False
    return True if name in names and after[0] in "(.\\" else False


def _object_verdict(rest: str) -> bool | None:
    """After an answer's opening "{": whether its first key is one a call has."""
    if not rest:
        return None
    if rest[0] != '"':
        return False
    end = rest.find('"', 1)
    key = rest[1:] if end < 0 else rest[1:end]
    if "\\" in key:
        return True  # an escape may spell a call's key: hold
    if end < 0:
        return None if any(call_key.startswith(key) for call_key in CALL_KEYS) else False
    return key in CALL_KEYS
