"""Tool calls read out of a model's answer text, pure.

Models write calls in their own formats:
- Hermes, Qwen 2.5/3: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, one block
  per call (older Hermes 2 Pro writes Python dict literals, single quotes and all);
- Llama 3.x: a bare `{"name": ..., "parameters": {...}}` (several joined by `;`), after
  `<|python_tag|>` when the template renders it (also a built-in style `name.call(k="v")`),
  `<function=name>{...}</function>`, or 3.2's Python list `[name(k='v'), ...]`;
- Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}]`, and since the v11 tokenizer
  `[TOOL_CALLS]name[ARGS]{...}` per call;
- anything else: an answer that is, as a whole (a ```json fence allowed), a call object or a list
  of them ({"name", "arguments" or "parameters"}, OpenAI's nested "function" too).

Only names among the request's tools count; anything else, or a call that does not parse, stays
plain content, verbatim. Arguments become JSON text of an object. Ids come from the caller.
`ToolCallSplitter` does the same on a stream: what cannot start a call streams at once, the
rest is held to the end (`tool_call_start` tells which is which), so calls arrive whole and content is never sent twice.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterable

from meshdesk.core.tool_call_start import (CALL_KEYS, FUNCTION_OPEN, HERMES_OPEN, MARKERS, MISTRAL, PYTHON_TAG,
                                           start_verdict)

HERMES_CLOSE = "</tool_call>"
FUNCTION_CLOSE = "</function>"
END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "</s>", "<|im_end|>")
_MISTRAL_NAMED = re.compile(r"([a-zA-Z0-9_-]{1,64})(?:\[CALL_ID\][a-zA-Z0-9_-]{1,64})?\[ARGS\]")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # NaN, Infinity: not JSON, not a call

NewId = Callable[[], str]


def counting_ids(prefix: str = "call_") -> NewId:
    """call_0, call_1, ...: ids for tests and for callers that number calls themselves."""
    count = iter(range(1 << 62))
    return lambda: f"{prefix}{next(count)}"


def parse_tool_calls(text: str, tool_names: Iterable[str], new_id: NewId | None = None) -> tuple[str, list[dict]]:
    """(content, calls) of a whole answer: calls as [{"id", "name", "arguments": JSON text}]."""
    names = frozenset(tool_names)
    new_id = new_id or counting_ids()
    if not names:
        return text, []
    spans = _whole_json_calls(text, names)
    if spans is None:
        spans = _marked_calls(text, names)
    if not spans:
        return text, []
    return _content(text, spans), [{"id": new_id(), "name": name, "arguments": arguments}
                                   for _, _, calls in spans for name, arguments in calls]


class ToolCallSplitter:
    """feed(text) -> the text safe to stream now; close() -> (content held back, calls).
    The content streamed and the content from close() together are exactly `parse_tool_calls`'
    content of the whole answer, and the calls are its calls."""

    def __init__(self, tool_names: Iterable[str], new_id: NewId | None = None):
        self.names = frozenset(tool_names)
        self.new_id = new_id
        self.text = ""
        self.sent = 0
        self.started = False  # a start that cannot be a call was seen: content streams
        self.holding = False  # a call may have begun: everything from here is held to the end

    def feed(self, text: str) -> str:
        self.text += text
        if not self.names:
            return self._send(len(self.text))
        if self.holding:
            return ""
        if not self.started:
            verdict = start_verdict(self.text.lstrip(), self.names)
            if verdict is None:  # too soon to tell
                return ""
            self.holding, self.started = verdict, not verdict
            if verdict:
                return ""
        pending = self.text[self.sent:]
        found = [index for index in (pending.find(marker) for marker in MARKERS) if index >= 0]
        if found:
            self.holding = True
            return self._send(self.sent + min(found))
        return self._send(len(self.text) - _marker_prefix_length(pending))

    def close(self) -> tuple[str, list[dict]]:
        content, calls = parse_tool_calls(self.text, self.names, self.new_id)
        if not content.startswith(self.text[:self.sent]):  # never: nothing that may start a call was sent
            raise AssertionError("streamed text is not a prefix of the content")
        return content[self.sent:], calls

    def _send(self, end: int) -> str:
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out


def _marker_prefix_length(text: str) -> int:
    longest = 0
    for marker in MARKERS:
        for length in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:length]):
                longest = length
                break
    return longest


def _content(text: str, spans: list[tuple[int, int, list]]) -> str:
    """The text outside the calls: before the first call kept as it is (it may have streamed),
    the pieces after calls stripped, one per line; nothing but spaces is no content."""
    first = text[:spans[0][0]]
    pieces = [text[end:(spans[index + 1][0] if index + 1 < len(spans) else len(text))]
              for index, (_, end, _) in enumerate(spans)]
    later = [piece for piece in (_without_end_tokens(piece) for piece in pieces) if piece]
    if not first.strip():
        return "\n".join(later)
    joiner = "" if not later or first[-1:].isspace() else "\n"
    return first + joiner + "\n".join(later)


def _without_end_tokens(piece: str) -> str:
    piece = piece.strip()
    for token in END_TOKENS:
        piece = piece.replace(token, "")
    return piece.strip()


# Whole-answer JSON (Llama 3.x, generic) ---------------------------------------------------------


def _whole_json_calls(text: str, names: frozenset) -> list | None:
    body = text.strip()
    for token in END_TOKENS:
        body = body.removesuffix(token).rstrip()
    body = _unfenced(body)
    if not body or body[0] not in "{[":
        return None
    values = _json_sequence(body, separators=";,")
    calls = _calls_of(values, names) if values else _python_calls(body, names, listed=True)
    return [(0, len(text), calls)] if calls else None


def _unfenced(body: str) -> str:
    """The inside of a ```json (or ```JSON, or bare ```) fence around all of `body`, stripped;
    `body` itself when it is not one. String operations, linear in the text whatever it holds
    (a regex with `[ \\t]*` on both sides of a lazy `.*?` took cubic time on a run of spaces)."""
    if len(body) < 6 or not body.startswith("```") or not body.endswith("```"):
        return body
    inner = body[3:-3]
    return (inner[4:] if inner.startswith(("json", "JSON")) else inner).strip()


def _json_sequence(text: str, separators: str = ";") -> list | None:
    """JSON values one after another (spaces or a separator between), all of `text`, or None."""
    values, index = [], 0
    while True:
        index = _skip(text, index, separators if values else "")
        if index >= len(text):
            return values or None
        try:
            value, index = _DECODER.raw_decode(text, index)
        except (ValueError, RecursionError):
            return None
        values.append(value)


def _skip(text: str, index: int, separators: str) -> int:
    while index < len(text) and (text[index].isspace() or text[index] in separators):
        index += 1
    return index


def _calls_of(values: list, names: frozenset) -> list | None:
    """[(name, arguments)] when every value is a call (or a list of calls) to a known tool."""
    calls = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            call = _call(item, names)
            if call is None:
                return None
            calls.append(call)
    return calls or None


def _call(item, names: frozenset) -> tuple[str, str] | None:
    if not isinstance(item, dict) or not item.keys() <= CALL_KEYS or item.get("type", "function") != "function":
        return None
    if isinstance(item.get("function"), dict):  # OpenAI's own nesting, as small models copy it
        item = item["function"]
        if not isinstance(item, dict) or not item.keys() <= CALL_KEYS:
            return None
    name = item.get("name", item.get("function"))
    if not isinstance(name, str) or name not in names or ("arguments" in item and "parameters" in item):
        return None
    arguments = _arguments(item.get("arguments", item.get("parameters", {})))
    return None if arguments is None else (name, arguments)


def _arguments(arguments) -> str | None:
    if arguments is None or arguments == "":
        arguments = {}
    if isinstance(arguments, str):  # arguments already as JSON text, as some models write them
        try:
            arguments = json.loads(arguments, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict):
        return None
    try:  # 1e400 reads as infinity, which JSON cannot say: no call
        return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError):
        return None


# Marked calls (Hermes/Qwen, Mistral, Llama's python tag and <function=>) ------------------------


def _marked_calls(text: str, names: frozenset) -> list:
    spans: list = []
    index = 0
    while True:
        found = [(text.find(marker, index), marker) for marker in MARKERS]
        found = [(at, marker) for at, marker in found if at >= 0]
        if not found:
            return spans
        at, marker = min(found)
        span = _READERS[marker](text, at, names)
        if span is None:
            index = at + len(marker)  # not a call: it stays content
            continue
        spans.append(span)
        index = span[1]


def _hermes(text: str, at: int, names: frozenset):
    start = at + len(HERMES_OPEN)
    close = text.find(HERMES_CLOSE, start)
    if close < 0:  # the answer ended (a stop token) before the closing tag
        nxt = text.find(HERMES_OPEN, start)
        end = body_end = nxt if nxt >= 0 else len(text)
    else:
        body_end, end = close, close + len(HERMES_CLOSE)
    calls = _calls_of_text(text[start:body_end], names)
    return None if calls is None else (at, end, calls)


def _calls_of_text(body: str, names: frozenset) -> list | None:
    body = _unfenced(body.strip())
    values = _json_sequence(body)
    if values is None:
        values = _python_literal(body)
    return _calls_of(values, names) if values else None


def _python_literal(body: str) -> list | None:
    """Hermes 2 Pro's {'name': 'f', 'arguments': {'k': 'v'}}: a Python literal, read safely."""
    if not body.startswith(("{", "[")) or len(body) > 100_000:
        return None
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return [value]


def _mistral(text: str, at: int, names: frozenset):
    start = at + len(MISTRAL)
    named = _MISTRAL_NAMED.match(text, _skip(text, start, ""))
    if named:
        index = _skip(text, named.end(), "")
        try:
            arguments, end = _DECODER.raw_decode(text, index)
        except (ValueError, RecursionError):
            return None
        call = _call({"name": named.group(1), "arguments": arguments}, names)
        return None if call is None else (at, end, [call])
    index = _skip(text, start, "")
    try:
        value, end = _DECODER.raw_decode(text, index)
    except (ValueError, RecursionError):
        return None
    calls = _calls_of([value], names)
    return None if calls is None else (at, end, calls)


def _python_tag(text: str, at: int, names: frozenset):
    start = at + len(PYTHON_TAG)
    body = text[start:]
    for token in END_TOKENS:
        body = body.split(token, 1)[0]
    calls = _calls_of_text(body, names) if body.strip()[:1] in ("{", "[") else _python_calls(body.strip(), names)
    if calls is None:
        return None
    end = start + len(body)
    for token in END_TOKENS:
        if text.startswith(token, end):
            end += len(token)
    return at, end, calls


def _python_calls(body: str, names: frozenset, listed: bool = False) -> list | None:
    """Python-style calls, keyword literals only: Llama 3.1's built-in `brave_search.call(query="x")`
    after the python tag, or Llama 3.2's `[get_weather(city='Paris'), ...]` as a whole answer."""
    if len(body) > 100_000:
        return None
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if listed != isinstance(tree, ast.List):
        return None
    calls = [_python_call(node, names) for node in (tree.elts if listed else [tree])]
    return calls if calls and None not in calls else None


def _python_call(tree: ast.AST, names: frozenset) -> tuple[str, str] | None:
    if not isinstance(tree, ast.Call) or tree.args:
        return None
    func = tree.func
    if isinstance(func, ast.Attribute) and func.attr == "call" and isinstance(func.value, ast.Name):
        name = func.value.id
    elif isinstance(func, ast.Name):
        name = func.id
    else:
        return None
    try:
        arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in tree.keywords}
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return None
    if None in arguments or not _jsonable(arguments):
        return None
    return _call({"name": name, "arguments": arguments}, names)


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _function_tag(text: str, at: int, names: frozenset):
    head = text.find(">", at)
    if head < 0:
        return None
    name = text[at + len(FUNCTION_OPEN):head]
    close = text.find(FUNCTION_CLOSE, head)
    body_end, end = (close, close + len(FUNCTION_CLOSE)) if close >= 0 else (len(text), len(text))
    try:
        arguments = json.loads(text[head + 1:body_end].strip() or "{}", parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    call = _call({"name": name, "arguments": arguments}, names)
    return None if call is None else (at, end, [call])


_READERS = {HERMES_OPEN: _hermes, MISTRAL: _mistral, PYTHON_TAG: _python_tag, FUNCTION_OPEN: _function_tag}
