"""Tools, tool_choice and response_format read from a chat body into the generation request, and
across the mesh wire (`to_wire`/`from_wire`, validated again on arrival)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.core.openai_api import GenerationRequest, RequestError, parse_chat_request

HI = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}


def chat(**fields) -> dict:
    return {"model": "m", "messages": HI} | fields


def across_the_mesh(request: GenerationRequest) -> GenerationRequest:
    return GenerationRequest.from_wire(json.loads(json.dumps(request.to_wire())))


def test_tools_are_normalised_and_cross_the_mesh_whole():
    request = parse_chat_request(chat(
        tools=[WEATHER, {"type": "function", "function": {"name": "ping"}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False,
        messages=[*HI, {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_9", "name": "get_weather", "content": "cold"}]))
    assert request.tools == (
        {"name": "get_weather", "description": "The weather", "parameters": WEATHER["function"]["parameters"]},
        {"name": "ping", "description": "", "parameters": {"type": "object", "properties": {}}})
    assert (request.tool_choice, request.tool_name, request.parallel_tool_calls) == ("function", "get_weather", False)
    assert request.messages[1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "call_9", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]}
    assert request.messages[2] == {"role": "tool", "content": "cold", "tool_call_id": "call_9", "name": "get_weather"}
    assert request.grammar_needed
    assert across_the_mesh(request) == request


@pytest.mark.parametrize("response_format, expected", [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": {
        "type": "object", "properties": {"name": {"type": "string"}}}}},
     {"type": "json_schema", "name": "city", "strict": True,
      "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}),
    ({"type": "json_schema", "json_schema": {"name": "n", "description": "d", "schema": {"type": "integer"}}},
     {"type": "json_schema", "name": "n", "strict": False, "schema": {"type": "integer"}}),
])
def test_response_format_is_read_flat_and_crosses_the_mesh(response_format, expected):
    request = parse_chat_request(chat(response_format=response_format))
    assert request.response_format == expected
    assert request.grammar_needed == (expected is not None)
    assert across_the_mesh(request) == request


def test_a_request_without_tools_needs_no_grammar_and_an_older_wire_reads_as_before():
    request = parse_chat_request(chat(tools=[], tool_choice="none", parallel_tool_calls=True))
    assert (request.tools, request.tool_choice, request.grammar_needed) == ((), "none", False)
    assert not parse_chat_request(chat(tools=[WEATHER])).grammar_needed  # "auto": the model may answer
    wire = parse_chat_request(chat()).to_wire()
    for field in ("tools", "tool_choice", "tool_name", "parallel_tool_calls", "response_format",
                  "presence_penalty", "frequency_penalty"):
        del wire[field]  # as a protocol 3 node wrote it
    assert GenerationRequest.from_wire(wire) == parse_chat_request(chat())


@pytest.mark.parametrize("change, param", [
    ({"tools": [{"name": "bad name", "description": "", "parameters": {}}]}, "tools[0].function.name"),
    ({"tools": "x"}, "tools"),
    ({"tool_choice": "function", "tool_name": "nope"}, "tool_choice.function.name"),
    ({"tool_name": "get_weather"}, "tool_name"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "name": "x", "schema": {"not": {}}, "strict": False}},
     "response_format.json_schema.schema.not"),
    ({"response_format": "json"}, "response_format"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"presence_penalty": 9}, "presence_penalty"),
])
def test_the_wire_is_validated_again_on_arrival(change, param):
    wire = parse_chat_request(chat(tools=[WEATHER])).to_wire() | change
    with pytest.raises(RequestError) as caught:
        GenerationRequest.from_wire(wire)
    assert caught.value.param == param


def test_a_completion_on_the_wire_carries_no_tools():
    from meshdesk.core.openai_api import parse_completion_request

    wire = parse_completion_request({"model": "m", "prompt": "p"}).to_wire()
    for change, param in (({"tools": [{"name": "a", "description": "", "parameters": {}}]}, "tools"),
                          ({"response_format": {"type": "json_object"}}, "response_format")):
        with pytest.raises(RequestError) as caught:
            GenerationRequest.from_wire(wire | change)
        assert caught.value.param == param


def test_arguments_are_kept_as_json_text():
    messages = [*HI, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": {"k": "v"}}},  # an object
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": ""}}]}]
    calls = parse_chat_request(chat(messages=messages)).messages[1]["tool_calls"]
    assert [call["arguments"] for call in calls] == ['{"k": "v"}', "{}"]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=12)
schemas = st.recursive(
    st.fixed_dictionaries({}, optional={"type": st.sampled_from(["string", "integer", "object", "array", "null"]),
                                        "description": st.text(max_size=4)}),
    lambda children: st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["object", "array"]), "properties": st.dictionaries(st.text(max_size=4), children,
                                                                                    max_size=3),
        "items": children, "anyOf": st.lists(children, min_size=1, max_size=2), "required": st.lists(st.text(max_size=4)),
        "pattern": st.sampled_from(["^a$", "^\\d+$", "x", "^[a-"]), "enum": st.lists(json_values, max_size=2),
        "minimum": st.integers(), "$ref": st.sampled_from(["#/$defs/a", "#/x"])}), max_leaves=8)
tool_bodies = st.fixed_dictionaries({"model": st.just("m"), "messages": st.just(HI)}, optional={
    "tools": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["function", "custom"]), "function":
                      st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "bad name", ""])},
                                            optional={"parameters": schemas | json_values,
                                                      "strict": json_values})}), max_size=3) | json_values,
    "tool_choice": st.sampled_from(["auto", "none", "required", "x"])
    | st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c"])})}) | json_values,
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "json_schema"]),
                                              "json_schema": st.fixed_dictionaries(
                                                  {"name": st.sampled_from(["s", "bad name"]), "schema": schemas})})
    | json_values,
    "parallel_tool_calls": json_values})


@settings(max_examples=300, deadline=None)
@given(tool_bodies)
def test_any_tools_body_parses_and_crosses_the_mesh_or_is_a_400(body):
    try:
        request = parse_chat_request(body)
    except RequestError as error:
        assert error.status == 400 and error.message and "\n" not in error.message
        return
    assert across_the_mesh(request) == request
