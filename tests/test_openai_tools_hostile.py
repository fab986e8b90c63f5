"""Schemas written to wedge a model host (the grammar llama.cpp would follow is exponentially
ambiguous, or huge): refused with a 400 naming where, before any routing, by a real server in
front of a gateway that records what reaches it. Common real schemas still pass."""

from __future__ import annotations

import http.client
import json

import pytest

from meshdesk.adapters import agent_apis
from meshdesk.adapters.openai_server import OpenAiServer
from meshdesk.core.json_schema_ambiguity import check_ambiguity
from meshdesk.core.json_schema_pattern import MAX_REPEAT, PatternError, read_pattern
from meshdesk.core.json_schema_support import MAX_GRAMMAR_COST, SchemaError, grammar_schema
from meshdesk.core.local_api_policy import ApiAccess
from tests.threaded_server import serving


def chain(depth: int) -> dict:
    """The reviewer's schema: unions of two identical branches, chained through $defs."""
    defs = {f"d{i}": {"anyOf": [{"type": "array", "prefixItems": [{"$ref": f"#/$defs/d{i + 1}"}]}] * 2}
            for i in range(depth)}
    defs[f"d{depth}"] = {"type": "integer"}
    return {"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}, "required": ["x"], "$defs": defs}


RECURSIVE_UNION = {"type": "object", "properties": {"a": {"$ref": "#/$defs/d"}}, "$defs": {"d": {"anyOf": [
    {"type": "array", "items": {"$ref": "#/$defs/d"}}, {"type": "array", "prefixItems": [{"type": "null"}]}]}}}
HUGE = {"type": "object", "required": [f"p{i}" for i in range(1500)], "properties": {
    f"p{i}": {"type": "array", "items": {"type": "string", "maxLength": 1000}, "maxItems": 1000}
    for i in range(1500)}}
CAT = {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}}
DOG = {"type": "object", "properties": {"kind": {"const": "dog"}, "name": {"anyOf": [{"type": "string"},
                                                                                     {"type": "null"}]}}}
ACCEPTED = {
    "pydantic Optional nested": {"type": "object", "properties": {"a": {"anyOf": [
        {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/M"}, {"type": "null"}]}}, {"type": "null"}]}},
        "$defs": {"M": {"type": "object", "properties": {"b": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}},
    "discriminated union of objects": {"type": "object", "properties": {"pet": {"oneOf": [CAT, DOG]}}},
    "recursive tree": {"type": "object", "properties": {"root": {"$ref": "#/$defs/node"}}, "$defs": {"node": {
        "type": "object", "properties": {"label": {"type": "string"}, "note": {"anyOf": [{"type": "string"},
                                                                                        {"type": "null"}]},
                                         "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}},
    "two nested ambiguous unions": {"type": "object", "properties": {"a": {"anyOf": [
        {"type": "object", "properties": {"n": {"anyOf": [{"type": "integer"}, {"type": "number"}]}}}, CAT]}}},
    "a chain of two": chain(2),
    "strings of 1000, five times": {"type": "object", "properties": {
        f"s{i}": {"type": "string", "maxLength": 1000} for i in range(5)}},
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_common_schemas_are_accepted(name):
    grammar_schema(ACCEPTED[name], "schema")


@pytest.mark.parametrize("schema, where, words", [
    (chain(3), "schema.properties.x.$ref.anyOf[1].prefixItems[0].$ref.anyOf[1].prefixItems[0].$ref.anyOf",
     "more than 2 unions"),
    (chain(30), "schema.properties.x.$ref.anyOf[1].prefixItems[0].$ref.anyOf[1].prefixItems[0].$ref.anyOf",
     "more than 2 unions"),
    (RECURSIVE_UNION, "schema.properties.a.$ref.anyOf[0].items.$ref.anyOf[0].items.$ref.anyOf", "without end"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/d"}},
      "$defs": {"d": {"anyOf": [{"$ref": "#/$defs/d"}, {"type": "null"}]}}},
     "schema.properties.a.$ref.anyOf[0].$ref", "comes back to itself"),
    ({"type": "object", "properties": {"a": {"anyOf": [{"const": i} for i in range(10, 50)]}}},
     "schema.properties.a.anyOf", "40 branches"),
    (HUGE, "schema.properties.p4.items.maxLength", f"more than {MAX_GRAMMAR_COST} parts"),
    ({"type": "string", "pattern": "^(a|a?){1000}$"}, "schema.pattern", "can match nothing"),
])
def test_a_schema_that_would_wedge_the_host_is_refused_naming_where(schema, where, words):
    with pytest.raises(SchemaError) as caught:
        grammar_schema(schema, "schema")
    assert caught.value.param == where
    assert words in caught.value.message


def test_the_walk_is_linear_in_the_schema_whatever_its_references():
    # Each definition names the next twice: 2^40 paths, each state visited once.
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"},
                                                       "b": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(40)}
    defs["d40"] = {"anyOf": [{"type": "integer"}, {"type": "number"}]}
    normal = grammar_schema({"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": defs})
    assert check_ambiguity(normal, "schema") < 40 * 2 * 8


@pytest.mark.parametrize("pattern", ["^(a|a?){1000}$", "^(a{0,1000}){0,1000}$", "^((a?){10}){100}$",
                                     "^(a?){300}$", "^(a*)*$", "^(|a)+$", "^(a?b?)*$", "^((ab){100}){100}$",
                                     "^(a{1,40}){1,40}$"])
def test_a_pattern_that_multiplies_the_grammars_readings_is_refused(pattern):
    with pytest.raises(PatternError) as caught:
        read_pattern(pattern)
    assert "can match nothing" in str(caught.value) or f"multiply to more than {MAX_REPEAT}" in str(caught.value)


@pytest.mark.parametrize("pattern, size", [("^[a-z]{3}-\\d{4}$", 8), ("^(ab|c)+$", 3), ("^((ab){2}){3}$", 12),
                                           ("^(a|)b$", 2), ("^[a-z0-9]+(-[a-z0-9]+)*$", 3),
                                           ("^\\d{1,1000}$", 1000), ("^(ab){1,1000}$", 2000),
                                           ("^((ab){10}){100}$", 2000)])
def test_common_patterns_pass_with_their_unrolled_size(pattern, size):
    assert read_pattern(pattern)[1] == size


class RecordingGateway:
    def __init__(self):
        self.requests: list = []

    async def generate(self, request):
        self.requests.append(request)
        yield {"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": 1, "completion_tokens": 0}}


@pytest.fixture(scope="module")
def server():
    gateway = RecordingGateway()
    api = OpenAiServer(gateway, ApiAccess("secret-" + "s" * 32), routes=(agent_apis.add_routes,))
    with serving(api) as port:
        yield gateway, port


def post(port: int, path: str, body: dict) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json",
                                                        "Host": f"127.0.0.1:{port}"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def tool(parameters: dict, name: str = "f") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


HI = [{"role": "user", "content": "hi"}]
PLAIN_TOOL = tool({"type": "object", "properties": {"q": {"type": "string"}}}, "search")
ATTACKS = {
    "a union chain as the answer's schema": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": chain(30)}}},
        "response_format.json_schema.schema.properties.x.$ref.anyOf[1].prefixItems[0].$ref.anyOf[1]"
        ".prefixItems[0].$ref.anyOf"),
    "a union chain in a forced tool": (
        {"tools": [tool(chain(14))], "tool_choice": "required"},
        "tools[0].function.parameters.properties.x.$ref.anyOf[1].prefixItems[0].$ref.anyOf[1]"
        ".prefixItems[0].$ref.anyOf"),
    "a nullable repeat in a pattern": (
        {"tools": [tool({"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a|a?){1000}$"}}})],
         "tool_choice": {"type": "function", "function": {"name": "f"}}},
        "tools[0].function.parameters.properties.s.pattern"),
    "nested repeats in a pattern": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"s": {"type": "string", "pattern": "^(a{1,1000}){1,1000}$"}}}}}},
        "response_format.json_schema.schema.properties.s.pattern"),
    "1500 arrays of 1000 strings of 1000": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": HUGE}}},
        "response_format.json_schema.schema.properties.p4.items.maxLength"),
    "many tools each under the bound": (
        {"tools": [tool({"type": "object", "properties": {"s": {"type": "string", "maxLength": 1000}}}, f"t{i}")
                   for i in range(12)], "tool_choice": "required"},
        "tools[9].function.parameters.properties.s.maxLength"),
    "auto tools beside a response format (the grammar holds them all)": (
        {"tools": [PLAIN_TOOL, tool(chain(5))], "tool_choice": "auto", "response_format": {"type": "json_object"}},
        "tools[1].function.parameters.properties.x.$ref.anyOf[1].prefixItems[0].$ref.anyOf[1]"
        ".prefixItems[0].$ref.anyOf"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_hostile_body_is_a_400_naming_where_before_any_routing(server, name):
    gateway, port = server
    extra, param = ATTACKS[name]
    gateway.requests.clear()
    status, body = post(port, "/v1/chat/completions", {"model": "m", "messages": HI, **extra})
    assert status == 400, body
    assert body["error"]["param"] == param and "grammar" in body["error"]["message"]
    assert gateway.requests == []


def test_the_same_through_responses_and_messages(server):
    gateway, port = server
    gateway.requests.clear()
    status, body = post(port, "/v1/responses", {"model": "m", "input": "hi", "tool_choice": "required",
                                                "tools": [{"type": "function", "name": "f", "parameters": chain(20)}]})
    assert status == 400 and "more than 2 unions" in body["error"]["message"], body
    status, body = post(port, "/v1/messages", {"model": "m", "max_tokens": 10, "messages": HI,
                                               "tool_choice": {"type": "any"},
                                               "tools": [{"name": "f", "input_schema": chain(20)}]})
    assert status == 400 and "more than 2 unions" in body["error"]["message"], body
    assert gateway.requests == []


def test_auto_tools_without_a_response_format_are_not_held_to_the_grammar(server):
    gateway, port = server
    gateway.requests.clear()
    status, body = post(port, "/v1/chat/completions", {"model": "m", "messages": HI, "tools": [tool(chain(5))]})
    assert status == 200, body
    assert len(gateway.requests) == 1
