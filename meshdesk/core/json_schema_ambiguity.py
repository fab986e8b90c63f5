"""Whether a schema's grammar stays cheap to follow, decided on its normal form (`json_schema_support`).

llama.cpp follows a grammar by keeping one stack per way the text so far can still be read. A
union whose branches can begin with the same character keeps them all alive until they part;
such unions inside one another multiply, and a chain of them through `$defs` (each
`{"anyOf": [[d_next], [d_next]]}`) made one '[' cost 2^depth stacks: 15 s a token at depth 14,
a host wedged for good. So along any path through the schema, following `$ref`s, at most
MAX_AMBIGUOUS_NESTING such unions may sit inside one another (a recursive `$ref` back through one
nests them without end, and is refused), each with at most MAX_AMBIGUOUS_BRANCHES branches.
Unions whose branches begin differently (pydantic's Optional[X]: anyOf [X, null]) cost nothing
and are not counted; a discriminated union of objects counts once.

The walk visits each (definition, ambiguous unions above it) state once: its steps are linear in
the schema's size, whatever the references. `ValueError(path, message)` for a refusal.
"""

from __future__ import annotations

import json
from typing import Any

MAX_AMBIGUOUS_NESTING = 2
MAX_AMBIGUOUS_BRANCHES = 32
MAX_REF_CHAIN = 64  # references followed before a first character is known
DIGITS = frozenset("-0123456789")
TYPE_FIRST = {"string": frozenset('"'), "number": DIGITS, "integer": DIGITS, "boolean": frozenset("tf"),
              "null": frozenset("n"), "object": frozenset("{"), "array": frozenset("[")}
DEFINITIONS = ("$defs", "definitions")


def check_ambiguity(normal: dict, param: str) -> int:
    """Refuses (ValueError(path, message)) what the module says; returns the steps it walked."""
    walk = _Walk(normal, param)
    return walk.run()


class _Walk:
    def __init__(self, normal: dict, param: str):
        self.top, self.param = normal, param
        self.firsts: dict[str, frozenset] = {}
        self.resolving: set[str] = set()
        self.steps = 0

    def run(self) -> int:
        seen: set[tuple[str, int]] = set()
        stack: list[tuple[Any, str, int]] = [(self.top, self.param, 0)]
        while stack:
            node, path, count = stack.pop()
            self.steps += 1
            if not isinstance(node, dict):
                continue
            if "$ref" in node:
                state = (node["$ref"], count)
                if state not in seen:
                    seen.add(state)
                    stack.append((self.target(node["$ref"]), f"{path}.$ref", count))
                continue
            branches, field = self.branches(node)
            if branches is not None and self.ambiguous(branches, f"{path}.{field}"):
                if len(branches) > MAX_AMBIGUOUS_BRANCHES:
                    raise ValueError(f"{path}.{field}", f"a union of {len(branches)} branches that can begin "
                                     f"alike (at most {MAX_AMBIGUOUS_BRANCHES})")
                count += 1
                if count > MAX_AMBIGUOUS_NESTING:
                    raise ValueError(f"{path}.{field}", self.too_deep())
            stack.extend((child, child_path, count) for child, child_path in self.children(node, path))
        return self.steps

    def too_deep(self) -> str:
        return (f"more than {MAX_AMBIGUOUS_NESTING} unions (anyOf/oneOf/type lists) whose branches can begin "
                "with the same character sit inside one another here, following $ref (a $ref back into "
                "such a union nests them without end); the grammar would follow exponentially many readings")

    def branches(self, node: dict) -> tuple[list | None, str]:
        for field in ("anyOf", "oneOf"):
            if isinstance(node.get(field), list):
                return node[field], field
        if isinstance(node.get("type"), list):
            return [{"type": kind} for kind in node["type"]], "type"
        return None, ""

    def ambiguous(self, branches: list, path: str) -> bool:
        seen: set[str] = set()
        for index, branch in enumerate(branches):
            chars = self.first(branch, f"{path}[{index}]", 0)
            if seen & chars:
                return True
            seen |= chars
        return False

    def children(self, node: dict, path: str):
        for field in ("anyOf", "oneOf", "prefixItems", "allOf"):
            if isinstance(node.get(field), list):
                yield from ((item, f"{path}.{field}[{index}]") for index, item in enumerate(node[field]))
        if isinstance(node.get("properties"), dict):
            yield from ((sub, f"{path}.properties.{name}") for name, sub in node["properties"].items())
        for field in ("items", "additionalProperties"):
            if isinstance(node.get(field), dict):
                yield node[field], f"{path}.{field}"

    def target(self, ref: str) -> Any:
        folder, name = ref[2:].split("/")
        return self.top.get(folder, {}).get(name, {})

    def first(self, node: Any, path: str, depth: int) -> frozenset:
        """The characters an answer to `node` can begin with."""
        self.steps += 1
        if not isinstance(node, dict):
            return frozenset()
        if "$ref" in node:
            ref = node["$ref"]
            if ref not in self.firsts:
                if ref in self.resolving:
                    raise ValueError(path, f"the reference {ref!r} comes back to itself before any character")
                if depth >= MAX_REF_CHAIN:
                    raise ValueError(path, f"more than {MAX_REF_CHAIN} references before any character")
                self.resolving.add(ref)
                self.firsts[ref] = self.first(self.target(ref), f"{path}.$ref", depth + 1)
                self.resolving.discard(ref)
            return self.firsts[ref]
        branches, _ = self.branches(node)
        if branches is not None:
            return frozenset().union(*(self.first(branch, path, depth) for branch in branches))
        if "const" in node:
            return _literal_first([node["const"]])
        if "enum" in node:
            return _literal_first(node["enum"])
        if "properties" in node or "allOf" in node or "additionalProperties" in node:
            return TYPE_FIRST["object"]
        if "items" in node or "prefixItems" in node:
            return TYPE_FIRST["array"]
        if "pattern" in node or "format" in node:
            return TYPE_FIRST["string"]
        return TYPE_FIRST.get(node.get("type"), frozenset())


def _literal_first(values: list) -> frozenset:
    chars = set()
    for value in values:
        try:
            chars.add(json.dumps(value, ensure_ascii=False)[:1])
        except (TypeError, ValueError, RecursionError):
            continue
    return frozenset(chars)
