"""Structured output end to end: `response_format` json_object and json_schema (strict) through the
official openai SDK against a real node on SmolLM2; the answer is generated under a llama.cpp
grammar, so even this tiny model's answer parses and validates against the schema."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel


pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Give me a JSON object with the keys city and country for Paris."}]


class Place(BaseModel):
    city: str
    country: str
    population_millions: int


def test_json_object_streams_an_answer_that_parses_as_an_object(smol_node):
    chunks = list(smol_node.client().chat.completions.create(
        model="smollm2", messages=ASK, response_format={"type": "json_object"}, temperature=0, max_tokens=80,
        stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance(json.loads(text), dict)


def test_a_strict_json_schema_answer_validates_and_the_sdk_parses_it(smol_node):
    completion = smol_node.client().chat.completions.parse(
        model="smollm2", messages=ASK, response_format=Place, temperature=0, max_tokens=80)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    schema = openai.lib._pydantic.to_strict_json_schema(Place)
    jsonschema.validate(json.loads(message.content), schema)
    assert isinstance(message.parsed, Place)


def test_a_schema_the_grammar_cannot_follow_is_a_400_naming_it(smol_node):
    client = smol_node.client()
    unsupported = {"type": "object", "properties": {"city": {"type": "string"}}, "minProperties": 1}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8, response_format={
            "type": "json_schema", "json_schema": {"name": "place", "schema": unsupported, "strict": True}})
    assert "minProperties" in refused.value.message
    assert refused.value.body["param"].startswith("response_format.json_schema.schema")
    tool = {"type": "function", "function": {"name": "find", "parameters": unsupported}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8, tools=[tool],
                                       tool_choice="required")
    assert refused.value.body["param"].startswith("tools[0].function.parameters")
