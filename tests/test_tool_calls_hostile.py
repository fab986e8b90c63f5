"""Answers written to hurt the tool-call reader (core.tool_calls): it works in steps linear in the
answer, never more, and what it gives back is always a valid call or plain content."""

from __future__ import annotations

import json
import re

from meshdesk.core import tool_calls
from meshdesk.core.tool_calls import counting_ids, parse_tool_calls

try:
    from re import _parser as sre_parse  # Python 3.11+
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

TOOLS = ("search", "f")


def unbounded_repeats(pattern: str) -> int:
    """How many `*`, `+` or `{m,}` a regex holds (each one can make a backtracking engine
    retry the text under it)."""
    count, stack = 0, [sre_parse.parse(pattern)]
    while stack:
        for op, value in stack.pop():
            if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
                count += value[1] == sre_parse.MAXREPEAT
                stack.append(value[2])
            elif op in (sre_parse.SUBPATTERN,):
                stack.append(value[-1])
            elif op is sre_parse.BRANCH:
                stack.extend(value[1])
    return count


def test_the_reader_holds_no_regex_with_an_unbounded_repeat():
    # The ```json fence regex r"\A```(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```\Z" took 25 s on
    # "```" + 4000 spaces + "x": fences are read with string operations now.
    patterns = [value.pattern for value in vars(tool_calls).values() if isinstance(value, re.Pattern)]
    assert patterns  # the Mistral name reader, bounded {1,64}
    assert [pattern for pattern in patterns if unbounded_repeats(pattern)] == []


def test_fences_are_still_read_and_a_hostile_one_is_content():
    body = '{"name": "search", "arguments": {"q": "x"}}'
    for text in (f"```json\n{body}\n```", f"```JSON {body}```", f"```\n{body}\n```", f"``` {body} ```",
                 f"<tool_call>\n```json\n{body}\n```\n</tool_call>"):
        assert parse_tool_calls(text, TOOLS, counting_ids()) == \
            ("", [{"id": "call_0", "name": "search", "arguments": '{"q":"x"}'}]), text
    for text in ("```" + " " * 4000 + "x", "```" + " \t" * 3000 + "```", "```python\n" + body + "\n```"):
        assert parse_tool_calls(text, TOOLS, counting_ids()) == (text, [])


def test_arguments_json_cannot_say_are_no_call():
    # 1e400 reads as infinity; written back it would be "Infinity", which no JSON reader takes.
    for arguments in ('{"x": 1e400}', '{"x": -1e400}', '{"x": NaN}', '{"x": Infinity}', '{"x": [1, -Infinity]}'):
        for text in (f'<tool_call>\n{{"name": "f", "arguments": {arguments}}}\n</tool_call>',
                     f'{{"name": "f", "arguments": {arguments}}}', f"<function=f>{arguments}</function>",
                     f'[TOOL_CALLS]f[ARGS]{arguments}', "<tool_call>{'name': 'f', 'arguments': {'x': 1e400}}"
                                                         "</tool_call>", "[f(x=1e400)]",
                     f'{{"name": "f", "arguments": {json.dumps(arguments)}}}'):
            assert parse_tool_calls(text, TOOLS, counting_ids()) == (text, []), text
    _, calls = parse_tool_calls('{"name": "f", "arguments": {"x": 1e300}}', TOOLS, counting_ids())
    assert calls[0]["arguments"] == '{"x":1e+300}' and json.loads(calls[0]["arguments"]) == {"x": 1e300}


def test_the_hosts_tool_output_reads_the_hostile_fence_as_content_and_streams_it():
    from meshdesk.adapters.llama.tool_output import ToolOutput

    output = ToolOutput(["search"])
    text = "```" + " " * 4000 + "x"
    streamed = "".join(output.feed(piece) for piece in [text[:3], *text[3:-1], text[-1]])
    assert streamed == text  # once "x" shows it is no call, all of it goes out
    assert output.finish() == ("", [])
