"""Which JSON Schemas a llama.cpp grammar can hold, decided before a request is routed.

The model host builds its grammar with llama-cpp-python's own converter (`llama_grammar.
SchemaConverter`). That converter honours a few keywords per kind of schema and silently
ignores or crashes on the rest, so `grammar_schema` mirrors its dispatch: it returns the schema
in the form the converter handles exactly (annotations dropped, "any value" spelled as a type
list, regex escapes the grammar parser cannot read rewritten), or raises `SchemaError` naming
the keyword and where it sits. Whatever passes, an answer generated under the grammar
validates against the schema the client sent.

`check_schema_bounds` limits any schema-like value a body carries (depth, size), grammar or not.
Both raise `SchemaError` (a ValueError with the `param` it names); `core.openai_api` turns it
into the client's 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from meshdesk.core.json_schema_ambiguity import check_ambiguity
from meshdesk.core.json_schema_pattern import MAX_REPEAT, PatternError, read_pattern

MAX_SCHEMA_DEPTH = 48
MAX_SCHEMA_NODES = 20_000
# What one grammar may unroll: schemas read, enum values, string lengths, array lengths and
# pattern repeats, added up over every schema one answer's grammar holds (each costs some 20 bytes
# of grammar text, parsed twice per answer). A real agent tool is well under 500; 10 string
# fields of up to 500 characters still fit. 1500 arrays of 1000 strings of 1000 made 57 MB.
MAX_GRAMMAR_COST = 10_000

ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                         "deprecated", "readOnly", "writeOnly", "$defs", "definitions"})
# Keywords the converter reads, each in some kind of schema (which kind: `_Reader.read`).
HANDLED = frozenset({"type", "properties", "required", "additionalProperties", "items", "prefixItems", "enum",
                     "const", "anyOf", "oneOf", "allOf", "$ref", "format", "pattern", "minLength", "maxLength",
                     "minItems", "maxItems"})
PRIMITIVES = ("string", "number", "integer", "boolean", "null", "object", "array")
ANY_VALUE = {"type": ["string", "number", "boolean", "null", "object", "array"]}  # integers are numbers
FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
# Rule names the converter makes itself: a `$ref` whose last segment is one of them reuses it.
RESERVED_RULES = frozenset({"root", "dot", "space", "char", "value", "object", "array", "string", "number",
                            "integer", "boolean", "null", "uuid", "decimal-part", "integral-part", "date",
                            "time", "date-time", "date-string", "time-string", "date-time-string"})
_RULE_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


class SchemaError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


def describe(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_schema_bounds(value: Any, param: str) -> None:
    """At most MAX_SCHEMA_DEPTH levels of objects and lists, MAX_SCHEMA_NODES values in all."""
    stack, nodes = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise SchemaError(f"'{param}' is too large: more than {MAX_SCHEMA_NODES} values", param)
        if isinstance(item, (dict, list)):
            if depth > MAX_SCHEMA_DEPTH:
                raise SchemaError(f"'{param}' nests deeper than {MAX_SCHEMA_DEPTH} levels", param)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def check_grammar_schema(schema: dict, param: str) -> None:
    grammar_schema(schema, param)


def grammar_schema(schema: dict, param: str = "schema") -> dict:
    """`schema` as the converter reads it exactly, or the client's 400 (see the module)."""
    return read_grammar_schema(schema, param)[0]


def read_grammar_schema(schema: dict, param: str = "schema", budget: int = MAX_GRAMMAR_COST) -> tuple[dict, int]:
    """(`grammar_schema`, what its grammar unrolls, at most `budget`: see MAX_GRAMMAR_COST).
    A schema whose grammar would be exponentially ambiguous is refused too (`check_ambiguity`)."""
    check_schema_bounds(schema, param)
    reader = _Reader(schema, param, budget)
    normal = reader.root()
    try:
        check_ambiguity(normal, param)
    except ValueError as error:
        path, message = error.args
        raise _refuse(path, message) from None
    return normal, reader.cost


def _refuse(path: str, message: str) -> SchemaError:
    return SchemaError(f"'{path}': {message}; a grammar-constrained answer (tool_choice \"required\" or a "
                        "named function, or response_format json_schema) cannot follow it", path)


class _Reader:
    def __init__(self, root: dict, param: str, budget: int = MAX_GRAMMAR_COST):
        self.top, self.param, self.budget, self.cost = root, param, budget, 0
        self.refs: dict[str, str] = {}  # ref -> the path it was first read at
        self.definitions: dict[str, dict] = {}  # "$defs" or "definitions" -> {name: normal form}
        self.ref_names: dict[str, str] = {}  # rule name a ref makes -> the ref
        self.property_names = _property_rule_names(root)

    def root(self) -> dict:
        out = self.read(self.top, self.param)
        return out | self.definitions  # the definitions the references name, in normal form too

    def spend(self, amount: int, path: str) -> None:
        self.cost += amount
        if self.cost > self.budget:
            raise _refuse(path, f"the grammar would unroll more than {self.budget} parts (schemas, enum values "
                                "and the bounds maxLength, maxItems and pattern repeats, added up over the "
                                "request); ask for fewer or shorter ones")

    def read(self, schema: Any, path: str) -> dict:
        self.spend(1, path)
        if schema is True:
            return _any_value()
        if not isinstance(schema, dict):
            raise _refuse(path, f"a schema must be an object, got {describe(schema)}")
        keys = {key for key in schema if key not in ANNOTATIONS}
        if not keys:
            return _any_value()
        unknown = sorted(str(key) for key in keys - HANDLED)
        if unknown:
            raise _refuse(f"{path}.{unknown[0]}", f"the keyword '{unknown[0]}' is not supported")
        if "$ref" in schema:
            return self.ref(schema, keys, path)
        for union in ("anyOf", "oneOf"):
            if union in schema:
                self.only(schema, keys, {union}, path, f"beside '{union}'")
                return {union: self.schemas(schema[union], f"{path}.{union}", minimum=1)}
        kind = schema.get("type")
        if isinstance(kind, list):
            self.only(schema, keys, {"type"}, path, "beside a list of types (use anyOf)")
            if not kind or any(t not in PRIMITIVES for t in kind) or len(set(kind)) != len(kind):
                raise _refuse(f"{path}.type", f"must list distinct types among {', '.join(PRIMITIVES)}, "
                                              f"got {describe(kind)}")
            return {"type": list(kind)}
        if kind is not None and kind not in PRIMITIVES:
            raise _refuse(f"{path}.type", f"must be one of {', '.join(PRIMITIVES)}, got {describe(kind)}")
        if "const" in schema:
            return {"const": schema["const"]}
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise _refuse(f"{path}.enum", f"must be a non-empty list, got {describe(schema['enum'])}")
            self.spend(len(schema["enum"]), f"{path}.enum")
            return {"enum": list(schema["enum"])}
        if kind in (None, "object") and ("properties" in schema or schema.get("additionalProperties", True)
                                         is not True):
            return self.object(schema, keys, path)
        if kind in (None, "object") and "allOf" in schema:
            return self.all_of(schema, keys, path)
        if kind in (None, "array") and ("items" in schema or "prefixItems" in schema):
            return self.array(schema, keys, path)
        if kind in (None, "string") and ("pattern" in schema or "format" in schema):
            return self.string_shape(schema, keys, path)
        if kind == "string":
            return self.string(schema, keys, path)
        if kind is None:
            raise _refuse(path, f"a schema with {_names(keys)} needs a 'type' the grammar can follow")
        self.only(schema, keys, {"type", "additionalProperties"} if kind == "object" else {"type"}, path,
                  f"on type {kind!r}")
        return {"type": kind}

    def only(self, schema: dict, keys: set, allowed: set, path: str, where: str) -> None:
        extra = sorted(keys - allowed)
        if extra:
            raise _refuse(f"{path}.{extra[0]}", f"the keyword '{extra[0]}' {where} is not supported")

    def schemas(self, value: Any, path: str, minimum: int = 0) -> list:
        if not isinstance(value, list) or len(value) < minimum:
            raise _refuse(path, f"must be a list of at least {minimum} schemas, got {describe(value)}")
        return [self.read(item, f"{path}[{index}]") for index, item in enumerate(value)]

    def ref(self, schema: dict, keys: set, path: str) -> dict:
        self.only(schema, keys, {"$ref"}, path, "beside '$ref'")
        ref = schema["$ref"]
        target = self.target(ref, f"{path}.$ref")
        if ref not in self.refs:
            self.refs[ref] = path
            folder, name = ref[2:].split("/")
            self.definitions.setdefault(folder, {})[name] = {}
            # once: a recursive schema refers to itself again
            self.definitions[folder][name] = self.read(target, f"{path}.$ref")
        return {"$ref": ref}

    def target(self, ref: Any, path: str) -> dict:
        parts = ref[2:].split("/") if isinstance(ref, str) and ref.startswith("#/") else []
        if len(parts) != 2 or parts[0] not in ("$defs", "definitions") or not parts[1]:
            raise _refuse(path, "only a reference to a definition of this schema (\"#/$defs/NAME\" or "
                                f"\"#/definitions/NAME\") is supported, got {describe(ref)}")
        target: Any = self.top
        for part in parts:
            if not isinstance(target, dict) or part not in target:
                raise _refuse(path, f"the reference {describe(ref)} names nothing in the schema")
            target = target[part]
        name = _RULE_CHARS.sub("-", ref.split("/")[-1])
        if name in RESERVED_RULES or name in self.property_names or self.ref_names.get(name, ref) != ref:
            raise _refuse(path, f"the reference {describe(ref)} ends in a name the grammar already uses "
                                "for something else; rename the definition")
        self.ref_names[name] = ref
        return target if target is not True else {}

    def object(self, schema: dict, keys: set, path: str) -> dict:
        self.only(schema, keys, {"type", "properties", "required", "additionalProperties"}, path,
                  "on an object")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise _refuse(f"{path}.properties", f"must be an object, got {describe(properties)}")
        out: dict = {"type": "object", "properties": {
            name: self.read(sub, f"{path}.properties.{name}") for name, sub in properties.items()}}
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
            raise _refuse(f"{path}.required", f"must be a list of property names, got {describe(required)}")
        missing = [name for name in required if name not in properties]
        if missing:
            raise _refuse(f"{path}.required", f"names {missing[0]!r}, which is not among 'properties'")
        if required:
            out["required"] = list(dict.fromkeys(required))
        extra = schema.get("additionalProperties")
        if extra is True or extra is False:
            out["additionalProperties"] = extra
        elif extra is not None:
            read = self.read(extra, f"{path}.additionalProperties")
            out["additionalProperties"] = True if read == ANY_VALUE else read
        return out

    def all_of(self, schema: dict, keys: set, path: str) -> dict:
        # The converter merges the parts' properties, all required, and no others.
        self.only(schema, keys, {"type", "allOf"}, path, "beside 'allOf'")
        parts = schema["allOf"]
        if not isinstance(parts, list) or not parts:
            raise _refuse(f"{path}.allOf", f"must be a non-empty list of schemas, got {describe(parts)}")
        out = []
        for index, part in enumerate(parts):
            where = f"{path}.allOf[{index}]"
            if isinstance(part, dict) and "$ref" in part:
                self.ref(part, {key for key in part if key not in ANNOTATIONS}, where)
                target, out_part = self.target(part["$ref"], f"{where}.$ref"), {"$ref": part["$ref"]}
            else:
                target, out_part = part, None
            if not isinstance(target, dict) or not isinstance(target.get("properties"), dict):
                raise _refuse(where, "each part of 'allOf' must be an object schema with 'properties'")
            self.only(target, {key for key in target if key not in ANNOTATIONS},
                      {"type", "properties", "required"}, where, "in a part of 'allOf'")
            if target.get("type", "object") != "object":
                raise _refuse(f"{where}.type", "each part of 'allOf' must be an object")
            properties = {name: self.read(sub, f"{where}.properties.{name}")
                          for name, sub in target["properties"].items()}
            out.append(out_part or {"type": "object", "properties": properties})
        return {"type": "object", "allOf": out}

    def array(self, schema: dict, keys: set, path: str) -> dict:
        items, prefix = schema.get("items"), schema.get("prefixItems")
        if prefix is not None or isinstance(items, list):
            if prefix is not None and items not in (None, False):
                raise _refuse(f"{path}.items", "'items' beside 'prefixItems' is not supported")
            self.only(schema, keys, {"type", "items", "prefixItems", "minItems", "maxItems"}, path,
                      "on a fixed-length array")
            field = "prefixItems" if prefix is not None else "items"
            items = self.schemas(schema[field], f"{path}.{field}")
            low, high = self.lengths(schema, path, "minItems", "maxItems")  # as pydantic writes a tuple
            if not low <= len(items) <= (len(items) if high is None else high):
                raise _refuse(f"{path}.minItems" if low > len(items) else f"{path}.maxItems",
                              f"a fixed-length array of {len(items)} items cannot have it")
            return {"type": "array", "prefixItems": items}
        self.only(schema, keys, {"type", "items", "minItems", "maxItems"}, path, "on an array")
        out: dict = {"type": "array"}
        low, high = self.lengths(schema, path, "minItems", "maxItems")
        self.spend(low if high is None else high, f"{path}.maxItems" if high is not None else f"{path}.minItems")
        read = self.read(items, f"{path}.items")
        if read != ANY_VALUE or low or high is not None:
            out["items"] = read  # the converter crashes on "items": {}
        if low:
            out["minItems"] = low
        if high is not None:
            out["maxItems"] = high
        return out

    def string_shape(self, schema: dict, keys: set, path: str) -> dict:
        if "pattern" in schema:
            self.only(schema, keys, {"type", "pattern"}, path, "beside 'pattern'")
            try:
                pattern, size = read_pattern(schema["pattern"])
            except PatternError as error:
                raise _refuse(f"{path}.pattern", str(error)) from None
            self.spend(size, f"{path}.pattern")
            return {"type": "string", "pattern": pattern}
        self.only(schema, keys, {"type", "format"}, path, "beside 'format'")
        if schema["format"] not in FORMATS:
            raise _refuse(f"{path}.format", f"the format {describe(schema['format'])} is not supported "
                                            f"(only {', '.join(FORMATS)})")
        return {"type": "string", "format": schema["format"]}

    def string(self, schema: dict, keys: set, path: str) -> dict:
        self.only(schema, keys, {"type", "minLength", "maxLength"}, path, "on a string")
        low, high = self.lengths(schema, path, "minLength", "maxLength")
        self.spend(low if high is None else high, f"{path}.maxLength" if high is not None else f"{path}.minLength")
        out: dict = {"type": "string"}
        if low or high is not None:
            out["minLength"] = low
            if high is not None:
                out["maxLength"] = high
        return out

    def lengths(self, schema: dict, path: str, low_key: str, high_key: str) -> tuple[int, int | None]:
        low, high = schema.get(low_key, 0), schema.get(high_key)
        for key, value in ((low_key, low), (high_key, high)):
            if value is not None and (type(value) is not int or not 0 <= value <= MAX_REPEAT):
                raise _refuse(f"{path}.{key}", f"must be a whole number from 0 to {MAX_REPEAT}, "
                                               f"got {describe(value)}")
        if high is not None and high < low:
            raise _refuse(f"{path}.{high_key}", f"is less than '{low_key}'")
        return low, high


def _any_value() -> dict:
    return {"type": list(ANY_VALUE["type"])}


def _names(keys: set) -> str:
    return ", ".join(f"'{key}'" for key in sorted(keys))


def _property_rule_names(root: Any) -> set[str]:
    """Every property name in the schema, as the converter turns names into rules."""
    names, stack = set(), [root]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            properties = item.get("properties")
            if isinstance(properties, dict):
                names.update(_RULE_CHARS.sub("-", str(name)) for name in properties)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return names
