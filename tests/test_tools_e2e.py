"""Tool calls end to end: the official openai SDK against real nodes, real llama.cpp, and the two
bundled models (SmolLM2 through its own ChatML template, Gemma through the fallback template).

A tiny model's choices are poor; what is asserted is the protocol: a forced call names one of
the tools and its arguments validate against that tool's schema, finish reasons, streamed calls
the SDK assembles, and a follow-up turn that carries the call and its result."""

from __future__ import annotations

import json

import jsonschema
import pytest


pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "required": ["city", "unit"], "additionalProperties": False,
                   "properties": {"city": {"type": "string", "maxLength": 40},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Adds two integers",
    "parameters": {"type": "object", "required": ["a", "b"], "additionalProperties": False,
                   "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def assert_valid_calls(calls, only: str | None = None) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id
        assert call.function.name in SCHEMAS and (only is None or call.function.name == only)
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_gives_a_valid_call_and_a_follow_up_with_its_result_answers(smol_node):
    client = smol_node.client()
    answer = client.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS, tool_choice="required",
                                            temperature=0, max_tokens=120)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    assert_valid_calls(choice.message.tool_calls)

    call = choice.message.tool_calls[0]
    follow_up = [*ASK, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
    again = client.chat.completions.create(model="smollm2", messages=follow_up, tools=TOOLS, tool_choice="none",
                                           temperature=0, max_tokens=24)
    assert again.choices[0].finish_reason in ("stop", "length")
    assert again.choices[0].message.content and again.choices[0].message.tool_calls is None
    alone = client.chat.completions.create(model="smollm2", messages=ASK, tools=TOOLS, tool_choice="none",
                                           temperature=0, max_tokens=1)
    assert again.usage.prompt_tokens > alone.usage.prompt_tokens + 20  # the call and its result were read


def test_a_named_function_streams_as_tool_call_deltas_the_sdk_assembles(smol_node):
    client = smol_node.client()
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Add 2 and 3."}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}}, parallel_tool_calls=False,
        temperature=0, max_tokens=60, stream=True))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices and chunk.choices[0].delta.tool_calls]
    assert deltas and deltas[0].tool_calls[0].id and deltas[0].tool_calls[0].function.name == "add"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    with client.chat.completions.stream(model="smollm2", messages=[{"role": "user", "content": "Add 2 and 3."}],
                                        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
                                        parallel_tool_calls=False, temperature=0, max_tokens=60) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls
    assert len(calls) == 1
    assert_valid_calls(calls, only="add")


def test_auto_keeps_the_protocol_whatever_the_model_does(smol_node):
    chunks = list(smol_node.client().chat.completions.create(
        model="smollm2", messages=ASK, tools=TOOLS, temperature=0, max_tokens=60, stream=True))
    finish = chunks[-1].choices[0].finish_reason
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert finish in ("stop", "length", "tool_calls")
    assert (finish == "tool_calls") == bool(calls)
    assert text or calls
    for call in calls:  # whole calls (the finish event carries them), of the tools offered
        assert call.function.name in SCHEMAS and isinstance(json.loads(call.function.arguments), dict)


def test_gemma_through_its_fallback_template_gives_a_valid_call(shared_node):
    answer = shared_node.client().chat.completions.create(
        model="gemma-3-270m", messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120)
    assert answer.choices[0].finish_reason == "tool_calls"
    assert_valid_calls(answer.choices[0].message.tool_calls)
