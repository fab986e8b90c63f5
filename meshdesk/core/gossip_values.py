"""Bounded readers for the values a peer puts in gossip: each returns the value, normalised,
or raises `MembershipError` with one line saying what is wrong.

Records (`core.node_record`), model adverts (`core.model_advert`) and gossip messages
(`core.membership`) are all read with these, so every bound is checked the same way.
"""

from __future__ import annotations

import math

from meshdesk.core.errors import Fault, PeerProtocolError

MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 1024
MAX_COUNTER = 2**63 - 1
MAX_JSON_DEPTH = 8
MAX_JSON_VALUES = 4096  # per opaque field (versions)


class MembershipError(PeerProtocolError):
    """A malformed record, model advert or gossip message; the text is one line."""

    fault = Fault.MALFORMED


def check(condition: bool, problem: str) -> None:
    if not condition:
        raise MembershipError(problem)


def quoted(value: object) -> str:
    return repr(value)[:40]  # repr escapes newlines, so errors stay one line


def read_text(value: object, what: str, max_length: int = MAX_TEXT_LENGTH, *, empty_ok: bool = True) -> str:
    check(isinstance(value, str), f"{what} must be a string")
    check(len(value) <= max_length, f"{what} is longer than {max_length} characters")
    check(empty_ok or value != "", f"{what} is empty")
    return value


def read_node_id(value: object, what: str = "node id") -> str:
    return read_text(value, what, MAX_ID_LENGTH, empty_ok=False)


def read_counter(value: object, what: str, maximum: int = MAX_COUNTER) -> int:
    check(type(value) is int, f"{what} must be an integer")
    check(0 <= value <= maximum, f"{what} is out of range")
    return value


def read_flag(value: object, what: str) -> bool:
    check(type(value) is bool, f"{what} must be true or false")
    return value


def read_number(value: object, what: str) -> float:
    """A finite, non-negative number (ints become floats)."""
    check(type(value) in (int, float), f"{what} must be a number")
    check(math.isfinite(value) and value >= 0, f"{what} must be finite and not negative")
    return float(value)


def read_list(value: object, what: str, max_items: int) -> list | tuple:
    check(isinstance(value, (list, tuple)), f"{what} must be a list")
    check(len(value) <= max_items, f"{what} has more than {max_items} items")
    return value


def read_mapping(value: object, what: str, max_items: int) -> dict:
    check(isinstance(value, dict), f"{what} must be an object")
    check(len(value) <= max_items, f"{what} has more than {max_items} entries")
    return value


def require_fields(data: dict, expected: frozenset[str], what: str) -> None:
    missing = sorted(expected - data.keys())
    if missing:
        raise MembershipError(f"{what} lacks {missing[0]}")
    unknown = [key for key in data if key not in expected]
    if unknown:
        raise MembershipError(f"{what} has unknown field {quoted(unknown[0])}")


class _Budget:
    """Counts the values of one opaque JSON field, so a hostile peer cannot make it huge."""

    def __init__(self, values: int):
        self.remaining = values

    def spend(self, what: str) -> None:
        self.remaining -= 1
        check(self.remaining >= 0, f"{what} is too large")


def _json_copy(value: object, what: str, budget: _Budget, depth: int = 0) -> object:
    """A deep copy of plain JSON data (tuples become lists); anything else is refused."""
    budget.spend(what)
    check(depth <= MAX_JSON_DEPTH, f"{what} is nested too deeply")
    if value is None or type(value) is bool:
        return value
    if type(value) is int:
        check(abs(value) <= MAX_COUNTER, f"{what} holds an integer out of range")
        return value
    if type(value) is float:
        check(math.isfinite(value), f"{what} holds a number that is not finite")
        return value
    if type(value) is str:
        return read_text(value, what)
    if type(value) in (list, tuple):
        return [_json_copy(item, what, budget, depth + 1) for item in value]
    if type(value) is dict:
        return {
            read_text(key, f"{what} key"): _json_copy(item, what, budget, depth + 1) for key, item in value.items()
        }
    raise MembershipError(f"{what} holds a {type(value).__name__}, which is not JSON")


def read_json_object(value: object, what: str, max_values: int = MAX_JSON_VALUES) -> dict:
    """A deep copy of an opaque JSON object of at most `max_values` values."""
    check(type(value) is dict, f"{what} must be an object")
    return _json_copy(value, what, _Budget(max_values))
