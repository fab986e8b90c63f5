"""Tool calls read out of answers as real models write them (core.tool_calls), whole and streamed."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.core.tool_calls import ToolCallSplitter, counting_ids, parse_tool_calls

TOOLS = ("get_current_temperature", "get_temperature_date", "get_weather", "get_stock_fundamentals",
         "brave_search", "spotify_trending_songs", "run_command", "search")


def call(name: str, **arguments) -> tuple[str, dict]:
    return name, arguments


# (model and how it wrote it, the answer text, the content, the calls)
CASES = [
    # Qwen2.5-7B-Instruct, through its own template (tools in <tools>, calls in <tool_call>)
    ("qwen2.5 one call",
     '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}\n'
     '</tool_call>',
     "", [call("get_current_temperature", location="San Francisco, CA, USA")]),
    ("qwen2.5 parallel calls",
     '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}\n'
     '</tool_call>\n<tool_call>\n{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, '
     'USA", "date": "2024-10-01", "unit": "celsius"}}\n</tool_call>',
     "", [call("get_current_temperature", location="San Francisco, CA, USA"),
          call("get_temperature_date", location="San Francisco, CA, USA", date="2024-10-01", unit="celsius")]),
    ("qwen2.5 prose first",
     "I'll check the current temperature in Paris for you.\n<tool_call>\n"
     '{"name": "get_current_temperature", "arguments": {"location": "Paris, France", "unit": "celsius"}}\n'
     "</tool_call>",
     "I'll check the current temperature in Paris for you.\n",
     [call("get_current_temperature", location="Paris, France", unit="celsius")]),
    ("qwen2.5 stopped before the closing tag",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n',
     "", [call("get_weather", city="Paris")]),
    ("qwen3 after thinking",
     "<think>\nThe user wants the weather in Paris. I should call get_weather.\n</think>\n\n<tool_call>\n"
     '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     "<think>\nThe user wants the weather in Paris. I should call get_weather.\n</think>\n\n",
     [call("get_weather", city="Paris")]),
    ("qwen2.5-coder fenced json, no tags",
     '```json\n{\n  "name": "run_command",\n  "arguments": {\n    "command": "df -h"\n  }\n}\n```',
     "", [call("run_command", command="df -h")]),
    ("qwen2.5 fenced json inside the tags",
     '<tool_call>\n```json\n{"name": "run_command", "arguments": {"command": "ls -la"}}\n```\n</tool_call>',
     "", [call("run_command", command="ls -la")]),
    ("qwen2.5 arguments written as json text",
     '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n</tool_call>',
     "", [call("get_weather", city="Paris")]),
    # Hermes 2 Pro (Llama-3 8B): Python dict literals, arguments first
    ("hermes 2 pro python literal",
     "<tool_call>\n{'arguments': {'symbol': 'TSLA'}, 'name': 'get_stock_fundamentals'}\n</tool_call>",
     "", [call("get_stock_fundamentals", symbol="TSLA")]),
    ("hermes 3 json, arguments first",
     '<tool_call>\n{"arguments": {"symbol": "TSLA"}, "name": "get_stock_fundamentals"}\n</tool_call>',
     "", [call("get_stock_fundamentals", symbol="TSLA")]),
    # SmolLM2-Instruct: a list inside one tag
    ("smollm2 list in a tag",
     '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>',
     "", [call("get_weather", city="Paris")]),
    # Llama 3.1 / 3.2, JSON tool calling
    ("llama 3.1 json",
     '{"name": "get_current_temperature", "parameters": {"location": "San Francisco, CA", "unit": "Fahrenheit"}}',
     "", [call("get_current_temperature", location="San Francisco, CA", unit="Fahrenheit")]),
    ("llama 3.2 json with type",
     '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
     "", [call("get_weather", city="Paris")]),
    ("llama 3.2 two calls joined by a semicolon",
     '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_weather", "parameters": '
     '{"city": "Berlin"}}',
     "", [call("get_weather", city="Paris"), call("get_weather", city="Berlin")]),
    ("llama 3.1 python tag json",
     '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
     "", [call("get_weather", city="Paris")]),
    ("llama 3.1 built-in tool",
     '<|python_tag|>brave_search.call(query="current weather in Menlo Park, California")',
     "", [call("brave_search", query="current weather in Menlo Park, California")]),
    ("llama 3.1 custom function tag",
     '<function=spotify_trending_songs>{"n": "5"}</function>',
     "", [call("spotify_trending_songs", n="5")]),
    ("llama 3.2 pythonic list",
     "[get_weather(city='San Francisco', metric='celsius'), get_weather(city='Seattle', metric='celsius')]",
     "", [call("get_weather", city="San Francisco", metric="celsius"),
          call("get_weather", city="Seattle", metric="celsius")]),
    # Mistral
    ("mistral 7b v0.3",
     '[TOOL_CALLS] [{"name": "get_current_temperature", "arguments": {"location": "Paris, France", '
     '"unit": "celsius"}}]</s>',
     "", [call("get_current_temperature", location="Paris, France", unit="celsius")]),
    ("mistral nemo with its own id",
     '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a5Bc9XyZ1"}]',
     "", [call("get_weather", city="Paris")]),
    ("mistral with the control token dropped by the detokenizer",
     ' [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
     "", [call("get_weather", city="Paris")]),
    ("mistral small 3.2 name[ARGS]",
     '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]search[ARGS]{"q": "Paris events"}',
     "", [call("get_weather", city="Paris"), call("search", q="Paris events")]),
    ("magistral name[CALL_ID]id[ARGS]",
     '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}',
     "", [call("get_weather", city="Paris")]),
    # Generic: OpenAI's nesting copied by a small model, no arguments
    ("openai nesting copied",
     '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}',
     "", [call("get_weather", city="Paris")]),
    ("a call without arguments",
     '<tool_call>\n{"name": "search"}\n</tool_call>', "", [call("search")]),
    ("unicode arguments stay readable",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>',
     "", [call("get_weather", city="Zürich")]),
    # Malformed or not calls: plain content, verbatim
    ("truncated by max_tokens",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', []),
    ("a missing brace",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>', []),
    ("a tool that was not offered",
     '<tool_call>\n{"name": "send_email", "arguments": {"to": "a@b.c"}}\n</tool_call>',
     '<tool_call>\n{"name": "send_email", "arguments": {"to": "a@b.c"}}\n</tool_call>', []),
    ("json that is an answer, not a call",
     '{"name": "Paris", "population": 2102650}', '{"name": "Paris", "population": 2102650}', []),
    ("a call inside prose is not a whole-answer call",
     'Here is the call: {"name": "get_weather", "parameters": {"city": "Paris"}} Anything else?',
     'Here is the call: {"name": "get_weather", "parameters": {"city": "Paris"}} Anything else?', []),
    ("arguments that are not an object",
     '{"name": "get_weather", "arguments": ["Paris"]}', '{"name": "get_weather", "arguments": ["Paris"]}', []),
    ("one good call, one broken: the broken one stays content",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n'
     '{"name": "get_weather", "arguments": {"city": \n</tool_call>',
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>', [call("get_weather", city="Paris")]),
    ("plain prose", "The weather in Paris is usually mild in spring.",
     "The weather in Paris is usually mild in spring.", []),
    ("prose that mentions the marker", "Models write <tool_call> tags; this is not one.",
     "Models write <tool_call> tags; this is not one.", []),
    ("python that is not a call list", "[1, 2, 3]", "[1, 2, 3]", []),
    ("python with a positional argument", "[get_weather('Paris')]", "[get_weather('Paris')]", []),
]


def expected_calls(calls) -> list[dict]:
    return [{"id": f"call_{index}", "name": name, "arguments": json.dumps(arguments, separators=(",", ":"),
                                                                         ensure_ascii=False)}
            for index, (name, arguments) in enumerate(calls)]


@pytest.mark.parametrize("text, content, calls", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_answers_as_models_write_them(text, content, calls):
    got_content, got_calls = parse_tool_calls(text, TOOLS, counting_ids())
    assert got_content == content
    assert got_calls == expected_calls(calls)
    for got in got_calls:
        assert isinstance(json.loads(got["arguments"]), dict)


def split(text: str, cuts: list[int]) -> tuple[str, str, list[dict]]:
    splitter = ToolCallSplitter(TOOLS, counting_ids())
    streamed, last = [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        streamed.append(splitter.feed(text[last:cut]))
        last = cut
    held, calls = splitter.close()
    return "".join(streamed), held, calls


@pytest.mark.parametrize("text, content, calls", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_streamed_answers_give_the_same_content_and_calls(text, content, calls):
    for cuts in (list(range(len(text))), [], random.Random(len(text)).sample(range(len(text)), len(text) // 5)):
        streamed, held, got_calls = split(text, cuts)
        assert streamed + held == content
        assert got_calls == expected_calls(calls)
        if calls:  # nothing of a call ever streams
            assert "tool_call" not in streamed and "TOOL_CALLS" not in streamed and '"name"' not in streamed


def test_prose_streams_at_once_and_only_a_possible_marker_is_held():
    splitter = ToolCallSplitter(TOOLS, counting_ids())
    assert splitter.feed("Let me ") == "Let me "
    assert splitter.feed("check.\n<tool") == "check.\n"
    assert splitter.feed("_call>\n{") == ""
    assert splitter.feed('"name": "search", "arguments": {}}\n</tool_call>') == ""
    assert splitter.close() == ("", [{"id": "call_0", "name": "search", "arguments": "{}"}])


def test_a_false_start_is_released():
    splitter = ToolCallSplitter(TOOLS, counting_ids())
    assert splitter.feed("  ") == ""  # could still open a call
    assert splitter.feed("<") == ""
    assert splitter.feed("b>bold</b> and <to") == "  <b>bold</b> and "
    assert splitter.feed("day>") == "<today>"
    assert splitter.close() == ("", [])


def test_an_answer_starting_like_a_call_is_held_to_the_end():
    splitter = ToolCallSplitter(TOOLS, counting_ids())
    assert splitter.feed('{"na') == "" and splitter.feed('me": "Bob"') == "" and splitter.feed("}") == ""
    assert splitter.close() == ('{"name": "Bob"}', [])


@pytest.mark.parametrize("pieces", [
    ['{"ans', 'wer": ', "42}"],  # JSON whose first key no call has
    ["{ 4", "2 }"], ["[1, ", "2]"], ['["a", ', '"b"]'], ["[{\"x", '": 1}]'], ["[Note", ": see below]"],
    ["[get_weather", " is a tool]"], ["```py", "thon\nprint(1)\n```"], ["```json\n", "[1, 2]\n```"],
    ["``", "x``"], ["[T", "oday] it rains"],
])
def test_an_opening_that_clearly_is_not_a_call_is_released(pieces):
    splitter = ToolCallSplitter(TOOLS, counting_ids())
    streamed = [splitter.feed(piece) for piece in pieces]
    assert streamed[-1] and "".join(streamed) == "".join(pieces)  # out before the answer ends
    assert splitter.close() == ("", [])


def test_a_released_opening_still_finds_a_marked_call_after_it():
    splitter = ToolCallSplitter(TOOLS, counting_ids())
    assert splitter.feed('{"answer": 1} ') == '{"answer": 1} '
    assert splitter.feed('<tool_call>{"name": "search", "arguments": {}}</tool_call>') == ""
    assert splitter.close() == ("", [{"id": "call_0", "name": "search", "arguments": "{}"}])


def test_without_tools_nothing_is_held_or_parsed():
    splitter = ToolCallSplitter((), counting_ids())
    text = '<tool_call>\n{"name": "search", "arguments": {}}\n</tool_call>'
    assert splitter.feed(text) == text and splitter.close() == ("", [])
    assert parse_tool_calls(text, ()) == (text, [])


def test_ids_come_from_the_caller():
    ids = iter(["call_a", "call_b"])
    _, calls = parse_tool_calls('[{"name": "search", "arguments": {}}, {"name": "search", "arguments": {}}]',
                                TOOLS, lambda: next(ids))
    assert [c["id"] for c in calls] == ["call_a", "call_b"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<function=",
                                 "[ARGS]", '{"name": "search", "arguments": {}}', "{", "}", "[", "]", "```", " ",
                                 "\n", "search", "(q='x')", "hello", ";", '"', "'"]), max_size=12),
       st.lists(st.integers(0, 200), max_size=6))
def test_any_answer_parses_and_streams_consistently(pieces, cuts):
    text = "".join(pieces)
    content, calls = parse_tool_calls(text, TOOLS, counting_ids())
    streamed, held, split_calls = split(text, [cut for cut in cuts if cut <= len(text)])
    assert streamed + held == content and split_calls == calls
    for got in calls:
        assert got["name"] in TOOLS and isinstance(json.loads(got["arguments"]), dict)
