"""llama.cpp grammars (GBNF) that constrain an answer: to tool calls, to JSON, to a JSON Schema.

Built with llama-cpp-python's `SchemaConverter` (llama.cpp's json-schema-to-grammar), all
rules in one converter so a tool call grammar and an answer grammar can be alternatives:
- tool calls, in the Hermes form `core.tool_calls` reads back:
  `<tool_call>\\n{"name": "<a tool>", "arguments": <that tool's parameters>}\\n</tool_call>`,
  one call, or up to `MAX_PARALLEL_CALLS` on their own lines when `parallel_tool_calls`;
- `response_format` json_object (any JSON object) or json_schema (that schema).
With `tool_choice` "required" or a named function only calls are allowed; with "auto" and a
`response_format`, a call or the JSON answer (the model chooses, the grammar holds either way).
Once the grammar is complete llama.cpp allows only the end of the turn, so nothing trails.

llama.cpp's grammar sampler, given text it cannot parse, yields no sampler at all (and the
sampler chain would crash on it), so every grammar is parsed by llama.cpp itself first, and that
parsed sampler is the one the answer uses (`CheckedGrammar.take`): parsing once, not twice. A
grammar text longer than `MAX_GRAMMAR_CHARS` is refused before llama.cpp parses it at all.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

from llama_cpp.llama_grammar import LlamaGrammar, SchemaConverter

from meshdesk.core.json_schema_support import SchemaError, grammar_schema

# llama.cpp's parse takes ~0.2 s and ~30 MB a 1 MB of grammar text (57 MB: 11 s, 1.75 GB); the
# grammars of real tools and schemas are a few kB.
MAX_GRAMMAR_CHARS = 1_000_000
MAX_PARALLEL_CALLS = 4  # a tiny model under a grammar may repeat a call; never without end
CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"


class GrammarError(ValueError):
    """The schema (or tools) asked for cannot be turned into a grammar: the client's mistake."""


@dataclass(frozen=True)
class Constraint:
    """What one request's grammar allows, as plain values (see `constraint_for`)."""

    tools: tuple[dict, ...] = ()          # the tools a call may name; () allows no call
    calls_only: bool = False              # "required" or a named function: nothing but calls
    parallel: bool = True
    answer_schema: dict | None = None     # the JSON answer's schema ({} for any JSON object)


def constraint_for(request) -> Constraint | None:
    """The grammar a request needs, or None for free generation."""
    tools = tuple(request.tools)
    choice = request.tool_choice
    parallel = request.parallel_tool_calls
    if tools and choice in ("required", "function"):
        named = request.tool_name
        chosen = tuple(tool for tool in tools if choice == "required" or tool["name"] == named)
        if not chosen:
            raise GrammarError(f"tool_choice names {named!r}, which is not among the tools")
        return Constraint(chosen, calls_only=True, parallel=parallel and choice == "required")
    answer = answer_schema(request.response_format)
    if answer is None:
        return None
    return Constraint(tools if choice == "auto" else (), parallel=parallel, answer_schema=answer)


def answer_schema(response_format: dict | None) -> dict | None:
    if not response_format:
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    if response_format.get("type") == "json_schema":
        return response_format.get("schema") or {"type": "object"}
    return None


def grammar_text(constraint: Constraint) -> str:
    """The GBNF for `constraint`; raises GrammarError for a schema the converter cannot read."""
    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False,
                                dotall=False, raw_pattern=False)
    alternatives = []
    try:
        if constraint.tools:
            alternatives.append(_calls_rule(converter, constraint))
        if constraint.answer_schema is not None and not constraint.calls_only:
            schema = converter.resolve_refs(converted(constraint.answer_schema, "answer"), "answer")
            alternatives.append(converter.visit(schema, "answer"))
    except SchemaError as error:
        raise GrammarError(error.message) from None
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise GrammarError(f"this JSON Schema cannot be turned into a grammar: {error}") from None
    if not alternatives:
        raise GrammarError("nothing to constrain")
    converter._add_rule("root", " | ".join(alternatives))
    text = converter.format_grammar()
    if len(text) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"the grammar for this schema would be {len(text)} characters; at most "
                           f"{MAX_GRAMMAR_CHARS} are allowed (fewer or shorter properties, enums, lengths)")
    return text


def _calls_rule(converter: SchemaConverter, constraint: Constraint) -> str:
    calls = []
    for index, tool in enumerate(constraint.tools):
        prefix = f"tool{index}-" if len(constraint.tools) > 1 else ""
        parameters = converter.resolve_refs(converted(tool["parameters"], prefix), f"tool{index}")
        calls.append({"type": "object", "required": ["name", "arguments"],
                      "properties": {"name": {"const": tool["name"]}, "arguments": parameters}})
    call = converter.visit(calls[0] if len(calls) == 1 else {"oneOf": calls}, "call")
    block = converter._add_rule("call-block", f"{json.dumps(CALL_OPEN)} {call} {json.dumps(CALL_CLOSE)}")
    if not constraint.parallel:
        return converter._add_rule("calls", block)
    return converter._add_rule("calls", f'{block} ("\\n" {block}){{0,{MAX_PARALLEL_CALLS - 1}}}')


def converted(schema: dict, prefix: str) -> dict:
    """The schema as the converter reads it exactly (`core.json_schema_support`), its definitions
    renamed with `prefix`: the converter names a definition's rule by its last name alone, so two
    tools' "#/$defs/item" would otherwise share one rule."""
    return grammar_schema(renamed_definitions(copy.deepcopy(schema), prefix) if prefix else copy.deepcopy(schema))


def renamed_definitions(schema, prefix: str):
    if isinstance(schema, list):
        return [renamed_definitions(item, prefix) for item in schema]
    if not isinstance(schema, dict):
        return schema
    renamed = {}
    for key, value in schema.items():
        if key in ("$defs", "definitions") and isinstance(value, dict):
            renamed[key] = {prefix + name: renamed_definitions(item, prefix) for name, item in value.items()}
        elif key == "$ref" and isinstance(value, str):
            for folder in ("#/$defs/", "#/definitions/"):
                if value.startswith(folder) and "/" not in value[len(folder):]:
                    value = folder + prefix + value[len(folder):]
            renamed[key] = value
        else:
            renamed[key] = renamed_definitions(value, prefix)
    return renamed


class CheckedGrammar(LlamaGrammar):
    """A `LlamaGrammar` that llama.cpp has parsed: it holds that parsed grammar sampler until the
    answer's sampler takes it (`take`), or frees it."""

    parsed = None

    def take(self):
        parsed, self.parsed = self.parsed, None
        return parsed

    def __del__(self):
        import llama_cpp

        if self.parsed:
            llama_cpp.llama_sampler_free(self.take())


def llama_grammar(llama, constraint: Constraint | None) -> LlamaGrammar | None:
    """The checked `LlamaGrammar` for `constraint` on this model's vocabulary, or None."""
    if constraint is None:
        return None
    text = grammar_text(constraint)
    grammar = CheckedGrammar(_grammar=text)
    grammar.parsed = parsed_grammar(llama, text)
    return grammar


def parsed_grammar(llama, text: str):
    """llama.cpp's grammar sampler for `text` on this model's vocabulary; GrammarError if it cannot parse it."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarError("llama.cpp could not parse the grammar built from this schema")
    return sampler
