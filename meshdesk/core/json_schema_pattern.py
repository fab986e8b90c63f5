"""A JSON Schema `pattern` in the regex subset llama-cpp-python's converter turns into a grammar.

The converter copies a pattern almost as it is into GBNF, where `\\d`, `\\.` or `\\-` are
escapes llama.cpp's grammar parser refuses, and it asserts on what it does not read. So a
pattern is read here and rewritten: `\\d \\w \\s` and escaped punctuation become classes,
or refused with a `PatternError` saying what is not supported.
"""

from __future__ import annotations

import re
from typing import Any

MAX_REPEAT = 1000  # minLength/maxLength/minItems/maxItems and regex {m,n}: the grammar unrolls them
MAX_PATTERN_CHARS = 1000


class PatternError(ValueError):
    """What in a pattern the grammar cannot follow."""


_CLASS_ESCAPES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r", "t": "\\t", "n": "\\n", "r": "\\r"}
_SPECIAL = set("[]()|{}*+?")  # the converter unescapes these itself


def grammar_pattern(pattern: Any) -> str:
    """`pattern` rewritten into the regex subset the converter turns into a grammar: anchored
    ^...$, literals, `.`, classes, groups, `|`, `* + ?`, `{m}` `{m,}` `{m,n}`; `\\d \\w \\s` and
    escaped punctuation become classes the grammar parser reads."""
    return read_pattern(pattern)[0]


class _Group:
    """One group being read: its alternatives so far, each a list of items (whether it can match
    nothing, its size unrolled, the product of the quantifier maxima nested in it)."""

    def __init__(self):
        self.done: list[list[tuple[bool, int, int]]] = []
        self.items: list[tuple[bool, int, int]] = []

    def item(self) -> tuple[bool, int, int]:
        alternatives = self.done + [self.items]
        nullable = any(all(empty for empty, _, _ in items) for items in alternatives)
        return (nullable, sum(size for items in alternatives for _, size, _ in items),
                max((product for items in alternatives for _, _, product in items), default=1))


def read_pattern(pattern: Any) -> tuple[str, int]:
    """(the pattern as `grammar_pattern` writes it, its size once the grammar unrolls its bounded
    quantifiers). A quantifier on something that can match nothing is refused (`(a|a?){1000}`,
    `(a?)*`: a grammar keeps every way of matching alive, exponentially many), and so is a size
    above MAX_REPEAT of the product of nested quantifiers' maxima (`(a{1,1000}){1,1000}`)."""
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"must be a string of at most {MAX_PATTERN_CHARS} characters")
    if not (pattern.startswith("^") and pattern.endswith("$")) or pattern.endswith("\\$") or len(pattern) < 2:
        raise PatternError("a pattern must be anchored: start with '^' and end with '$'")
    out, index, body, groups = ["^"], 0, pattern[1:-1], [_Group()]
    repeatable = False  # whether what came last can take a quantifier
    while index < len(body):
        char, step, token, atom = body[index], 1, None, True
        if char == "\\":
            escaped = body[index + 1:index + 2]
            if not escaped:
                raise PatternError("the pattern ends in a lone backslash")
            token, step, repeatable = _escape_outside(escaped), 2, True
        elif char == "[":
            end, token = _char_class(body, index)
            step, repeatable = end - index, True
        elif char == "(":
            if body[index + 1:index + 2] == "?":
                raise PatternError("lookarounds and special groups '(?' are not supported")
            groups.append(_Group())
            repeatable, atom = False, False
        elif char == ")":
            if len(groups) == 1:
                raise PatternError("unbalanced parentheses")
            groups[-2].items.append(groups.pop().item())
            repeatable, atom = True, False
        elif char == "|":
            groups[-1].done.append(groups[-1].items)
            groups[-1].items = []
            repeatable, atom = False, False
        elif char in "*+?{":
            if not repeatable:
                raise PatternError(f"'{char}' must follow something it repeats (lazy and possessive "
                                    "quantifiers are not supported)")
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(char, (0, 0))
            if char == "{":
                end = body.find("}", index)
                match = re.fullmatch(r"\{(\d{1,6})(,(\d{0,6}))?\}", body[index:end + 1]) if end > 0 else None
                if match is None:
                    raise PatternError("a '{' must be a quantifier {m}, {m,} or {m,n}")
                low = int(match.group(1))
                high = low if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
                if low > MAX_REPEAT or (high is not None and not low <= high <= MAX_REPEAT):
                    raise PatternError(f"quantifiers must be at most {MAX_REPEAT} and ordered")
                token, step = body[index:end + 1], end + 1 - index
            nullable, size, product = groups[-1].items.pop()
            if nullable:
                raise PatternError(f"'{char}' repeats something that can match nothing (make the part "
                                   "it repeats match at least one character)")
            most = max(low, 1) if high is None else max(high, 1)
            size, product = size * most, product * most
            if product > MAX_REPEAT:
                raise PatternError(f"nested quantifiers multiply to more than {MAX_REPEAT} repeats")
            groups[-1].items.append((low == 0, size, product))
            repeatable, atom = False, False
        elif char in "^$":
            raise PatternError(f"'{char}' is only supported at the ends of the pattern")
        else:
            repeatable = True
        if atom:
            groups[-1].items.append((False, 1, 1))
        out.append(char if token is None else token)
        index += step
    if len(groups) != 1:
        raise PatternError("unbalanced parentheses")
    return "".join(out) + "$", groups[0].item()[1]


def _escape_outside(escaped: str) -> str:
    if escaped in "dws":
        return f"[{_CLASS_ESCAPES[escaped]}]"
    if escaped in "tnr":
        return f"[{_CLASS_ESCAPES[escaped]}]"
    if escaped in _SPECIAL:
        return "\\" + escaped
    if escaped.isalnum():
        raise PatternError(f"the escape '\\{escaped}' is not supported")
    return f"[\\x{ord(escaped):02X}]" if ord(escaped) < 256 else f"[\\u{ord(escaped):04X}]"


def _char_class(body: str, start: int) -> tuple[int, str]:
    out, index = ["["], start + 1
    if body[index:index + 1] == "^":
        out.append("^")
        index += 1
    while index < len(body) and body[index] != "]":
        char = body[index]
        if char == "\\":
            escaped = body[index + 1:index + 2]
            if escaped in _CLASS_ESCAPES and escaped:
                out.append(_CLASS_ESCAPES[escaped])
            elif escaped and not escaped.isalnum():
                out.append(f"\\x{ord(escaped):02X}" if ord(escaped) < 256 else f"\\u{ord(escaped):04X}")
            else:
                raise PatternError(f"the escape '\\{escaped}' is not supported in a character class")
            index += 2
            continue
        if char == "[":
            raise PatternError("nested '[' in a character class is not supported")
        expanded = index > start + 1 and body[index - 2] == "\\" and body[index - 1] in "dws"
        out.append("\\x2D" if char == "-" and expanded else char)  # [\w-]: no range from \w's last
        index += 1
    if index >= len(body):
        raise PatternError("unbalanced square brackets")
    if out[-1] in ("[", "^"):
        raise PatternError("an empty character class is not supported")
    return index + 1, "".join(out) + "]"
