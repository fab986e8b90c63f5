"""Which JSON Schemas a llama.cpp grammar can hold (core.json_schema_support): the refusals name
the keyword and where it sits, and what is accepted is turned by llama-cpp-python's own
converter into a grammar llama.cpp parses, under which a real model's answer validates."""

from __future__ import annotations

import json

import jsonschema
import pytest

from meshdesk.core.json_schema_support import (MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES, SchemaError,
                                               check_schema_bounds, grammar_schema)
from meshdesk.core.openai_api import RequestError, parse_chat_request

OBJ = {"type": "object"}


def obj(**properties) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


REFUSED = [
    (obj(a={"not": {"type": "string"}}), "properties.a.not", "'not'"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}, "properties": {}}, "if", "'if'"),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties", "'patternProperties'"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "dependentSchemas": {"a": {}}},
     "dependentSchemas", "'dependentSchemas'"),
    (obj(a={"$ref": "https://example.com/schema.json"}), "properties.a.$ref", "https://example.com"),
    (obj(a={"type": "string"}, b={"$ref": "#/properties/a"}), "properties.b.$ref", "#/properties/a"),
    (obj(a={"$ref": "#/$defs/missing"}), "properties.a.$ref", "names nothing"),
    (obj(a={"$ref": "#/$defs/T", "description": "x", "minLength": 2}) | {"$defs": {"T": {"type": "string"}}},
     "properties.a.minLength", "beside '$ref'"),
    (obj(a={"type": "string", "format": "email"}), "properties.a.format", '"email"'),
    (obj(n={"type": "integer", "minimum": 1}), "properties.n.minimum", "'minimum'"),
    (obj(n={"type": "number", "multipleOf": 0.5}), "properties.n.multipleOf", "'multipleOf'"),
    (obj(a={"type": "string", "pattern": "[a-z]+"}), "properties.a.pattern", "anchored"),
    (obj(a={"type": "string", "pattern": "^(?=x)x$"}), "properties.a.pattern", "lookarounds"),
    (obj(a={"type": "string", "pattern": "^a+?$"}), "properties.a.pattern", "lazy"),
    (obj(a={"type": "string", "pattern": "^\\bx$"}), "properties.a.pattern", "'\\b'"),
    (obj(a={"type": "string", "pattern": "^a{1,5000}$"}), "properties.a.pattern", "at most 1000"),
    (obj(a={"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}), "properties.a.maxLength", "beside 'pattern'"),
    (obj(a={"type": "string", "maxLength": 5000}), "properties.a.maxLength", "from 0 to 1000"),
    (obj(a={"type": "string", "minLength": 4, "maxLength": 2}), "properties.a.maxLength", "less than"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "required", "'b'"),
    (obj(a={"type": ["string", "null"], "enum": ["x", None]}), "properties.a.enum", "list of types"),
    (obj(a={"type": "array", "items": {"type": "string"}, "uniqueItems": True}), "properties.a.uniqueItems",
     "'uniqueItems'"),
    (obj(a={"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}}),
     "properties.a.items", "beside 'prefixItems'"),
    ({"allOf": [{"type": "string"}]}, "allOf[0]", "'allOf'"),
    (obj(a={"minLength": 2}), "properties.a", "needs a 'type'"),
    (obj(a={"type": "strin"}), "properties.a.type", '"strin"'),
    (obj(a={"type": "object", "minProperties": 1}), "properties.a.minProperties", "'minProperties'"),
    (obj(string={"$ref": "#/$defs/string"}) | {"$defs": {"string": {"type": "integer"}}},
     "properties.string.$ref", "rename the definition"),
    (obj(item={"type": "string"}, other={"$ref": "#/$defs/item"}) | {"$defs": {"item": {"type": "integer"}}},
     "properties.other.$ref", "rename the definition"),
    (obj(a={"anyOf": []}), "properties.a.anyOf", "at least 1"),
    (obj(a={"type": "array", "prefixItems": [{"type": "string"}], "minItems": 2}), "properties.a.minItems",
     "fixed-length array of 1"),
    (obj(a=False), "properties.a", "must be an object"),
]


@pytest.mark.parametrize("schema, where, fragment", REFUSED, ids=[case[1] + " " + case[2] for case in REFUSED])
def test_a_schema_the_grammar_cannot_hold_is_refused_by_keyword_and_path(schema, where, fragment):
    with pytest.raises(SchemaError) as caught:
        grammar_schema(schema, "schema")
    assert caught.value.param == f"schema.{where}"
    assert fragment in caught.value.message and "grammar" in caught.value.message


@pytest.mark.parametrize("schema, where, fragment", REFUSED[:6], ids=[case[1] for case in REFUSED[:6]])
def test_the_gateway_refuses_it_at_parse_time_for_json_schema_and_forced_tools(schema, where, fragment):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}}
    with pytest.raises(RequestError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400 and caught.value.param == f"response_format.json_schema.schema.{where}"
    assert fragment in caught.value.message
    tools = [{"type": "function", "function": {"name": "fine", "parameters": OBJ}},
             {"type": "function", "function": {"name": "odd", "parameters": schema}}]
    for choice in ("required", {"type": "function", "function": {"name": "odd"}}):
        with pytest.raises(RequestError) as caught:
            parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools,
                                "tool_choice": choice})
        assert caught.value.param == f"tools[1].function.parameters.{where}"
    # No grammar, no refusal: "auto" leaves the call to the model; a named other tool's grammar is fine's.
    for choice in ("auto", "none", {"type": "function", "function": {"name": "fine"}}):
        request = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                      "tools": tools, "tool_choice": choice})
        assert request.tools[1]["parameters"] == schema


def test_hostile_schemas_are_bounded_before_any_walk():
    deep: dict = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaError, match="nests deeper"):
        check_schema_bounds(deep, "p")
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_NODES // 2)}}
    with pytest.raises(SchemaError, match="too large"):
        check_schema_bounds(wide, "p")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "t", "parameters": deep}}]}
    with pytest.raises(RequestError) as caught:
        parse_chat_request(body)  # bounded even when no grammar is asked for
    assert caught.value.param == "tools[0].function.parameters"


def test_the_normal_form_is_what_the_converter_reads_exactly():
    schema = {"type": "object", "title": "T", "description": "d", "properties": {
        "anything": {}, "described": {"description": "any value"}, "list": {"type": "array", "items": {}},
        "code": {"type": "string", "pattern": "^\\d{3}\\.[\\w-]+$"},  # "-" after \w is no range
        "extra": {"type": "object", "additionalProperties": {}}}}
    assert grammar_schema(schema) == {"type": "object", "properties": {
        "anything": {"type": ["string", "number", "boolean", "null", "object", "array"]},
        "described": {"type": ["string", "number", "boolean", "null", "object", "array"]},
        "list": {"type": "array"},
        "code": {"type": "string", "pattern": "^[0-9]{3}[\\x2E][a-zA-Z0-9_\\x2D]+$"},
        "extra": {"type": "object", "properties": {}, "additionalProperties": True}}}


def test_the_schemas_the_openai_sdk_sends_for_a_pydantic_model_are_accepted():
    """What `client.chat.completions.parse(response_format=Model)` and `pydantic_function_tool` send."""
    import datetime
    import enum
    from typing import Literal, Optional

    import pydantic
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    from openai.lib._pydantic import to_strict_json_schema

    class Colour(enum.Enum):
        RED, BLUE = "red", "blue"

    class Address(pydantic.BaseModel):
        city: str
        zip: Optional[str]

    class Person(pydantic.BaseModel):
        name: str
        age: int
        kind: Literal["friend", "foe"]
        colour: Colour
        born: datetime.date
        tags: list[str]
        home: Address
        point: tuple[float, float]
        scores: dict[str, int]

    for schema in (to_strict_json_schema(Person), Person.model_json_schema()):
        normal = grammar_schema(schema)
        assert set(normal["$defs"]) == {"Address", "Colour"}
        assert "home-kv" in json_schema_to_gbnf(json.dumps(normal))


# ------------------------------------------------------------- against llama.cpp itself

ACCEPTED = {
    "weather call": obj(city={"type": "string", "maxLength": 20}, unit={"enum": ["celsius", "fahrenheit"]}),
    "pattern with escapes": obj(code={"type": "string", "pattern": "^\\d{3}-[A-Z]{2}\\.x$"}),
    "formats": obj(day={"type": "string", "format": "date"}, id={"type": "string", "format": "uuid"}),
    "nullable and optional": {"type": "object", "properties": {
        "name": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}]},
        "age": {"type": "integer"}}, "required": ["age"]},
    "bounded list": obj(tags={"type": "array", "items": {"type": "string", "maxLength": 8},
                              "minItems": 1, "maxItems": 3}),
    "tuple": obj(point={"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}],
                        "minItems": 2, "maxItems": 2}),  # as pydantic writes tuple[float, float]
    "definitions": {"type": "object", "properties": {"owner": {"$ref": "#/$defs/Person"}},
                    "required": ["owner"], "$defs": {"Person": obj(name={"type": "string", "maxLength": 12},
                                                                    admin={"type": "boolean"})}},
    "allOf merge": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                              {"properties": {"b": {"const": "fixed"}}}]},
    "any values": obj(payload={}, note={"description": "free"}, items={"type": "array", "items": {}, "maxItems": 2},
                      nick={"type": ["string", "null"]}),
}
# Generating under a grammar is slow on a shared CPU: a real answer for the shapes the normal form
# rewrites most (the others, and values a tiny model may write without end, check the grammar only).
GENERATED = {"pattern with escapes", "definitions", "allOf merge", "tuple", "bounded list"}


@pytest.fixture(scope="module")
def small_llama(smollm2_model_path):
    from llama_cpp import Llama

    return Llama(model_path=str(smollm2_model_path), n_ctx=1024, verbose=False, seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ACCEPTED))
def test_an_accepted_schema_makes_a_grammar_llama_cpp_parses_and_the_answer_validates(name, small_llama):
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    schema = ACCEPTED[name]
    gbnf = json_schema_to_gbnf(json.dumps(grammar_schema(schema)))
    sampler = llama_cpp.llama_sampler_init_grammar(small_llama._model.vocab, gbnf.encode(), b"root")
    assert sampler, f"llama.cpp could not parse the grammar:\n{gbnf}"
    llama_cpp.llama_sampler_free(sampler)
    if name not in GENERATED:
        return
    prompt = ("<|im_start|>user\nAnswer with one JSON object following this schema:\n"
              f"{json.dumps(schema)}<|im_end|>\n<|im_start|>assistant\n")
    answer = small_llama.create_completion(prompt, grammar=LlamaGrammar.from_string(gbnf, verbose=False),
                                           max_tokens=200, temperature=0.7, seed=3)
    text = answer["choices"][0]["text"]
    assert answer["choices"][0]["finish_reason"] == "stop", text
    jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
