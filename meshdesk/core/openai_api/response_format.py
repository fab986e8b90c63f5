"""`response_format` in a chat body: text (None), {"type": "json_object"}, or a JSON Schema
the answer must follow, flattened to {"type": "json_schema", "name", "schema", "strict"}.
Both JSON forms are generated under a llama.cpp grammar, so a schema the grammar cannot
express is the client's 400 (`core.json_schema_support`), read here before any routing."""

from __future__ import annotations

from typing import Any

from meshdesk.core.json_schema_support import grammar_schema
from meshdesk.core.openai_api.errors import RequestError, describe
from meshdesk.core.openai_api.tools import TOOL_NAME, checked_schema

FORMAT_TYPES = ("text", "json_object", "json_schema")


def read_response_format(body: dict) -> dict | None:
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in FORMAT_TYPES:
        got = value.get("type") if isinstance(value, dict) else value
        raise RequestError(f"'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", "
                           f"got {describe(got)}", param="response_format.type")
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return {"type": "json_object"}
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise RequestError(f"'response_format.json_schema' must be an object with 'name' and 'schema', "
                           f"got {describe(spec)}", param="response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise RequestError("'response_format.json_schema.name' must be 1 to 64 letters, digits, underscores "
                           f"or dashes, got {describe(name)}", param="response_format.json_schema.name")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise RequestError(f"'response_format.json_schema.schema' must be a JSON Schema object, "
                           f"got {describe(schema)}", param="response_format.json_schema.schema")
    checked_schema(grammar_schema, schema, "response_format.json_schema.schema")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise RequestError(f"'response_format.json_schema.strict' must be a boolean, got {describe(strict)}",
                           param="response_format.json_schema.strict")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise RequestError(f"'response_format.json_schema.description' must be a string, "
                           f"got {describe(description)}", param="response_format.json_schema.description")
    return {"type": "json_schema", "name": name, "schema": schema, "strict": bool(strict)}


def response_format_to_body(response_format: dict | None) -> Any:
    if response_format is None or response_format["type"] == "json_object":
        return response_format
    return {"type": "json_schema", "json_schema": {"name": response_format["name"],
                                                   "schema": response_format["schema"],
                                                   "strict": response_format["strict"]}}
