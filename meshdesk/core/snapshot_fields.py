"""Reading the fields of a status snapshot's wire form back, each checked for its type.

The snapshot is ours (`/api/status`), not a peer's, so a mismatch is a `SnapshotError`: the
other side is not a MeshDesk node of this version, or a test built the JSON by hand wrongly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

Parsed = TypeVar("Parsed")
State = TypeVar("State", bound=StrEnum)


class SnapshotError(ValueError):
    """A status snapshot's JSON lacks a field or holds the wrong kind of value in it."""


def section(data: object, what: str) -> dict:
    if not isinstance(data, dict):
        raise SnapshotError(f"{what} must be an object")
    return data


def field(data: dict, key: str, kinds: type | tuple[type, ...], what: str):
    """`data[key]`, of one of `kinds` (None is allowed when NoneType is among them)."""
    if key not in data:
        raise SnapshotError(f"{what} lacks {key!r}")
    value = data[key]
    bool_sneaks_in = isinstance(value, bool) and bool not in _as_tuple(kinds)
    if bool_sneaks_in or not isinstance(value, kinds):
        raise SnapshotError(f"{what}.{key} has the wrong type ({type(value).__name__})")
    return value


def text(data: dict, key: str, what: str) -> str:
    return field(data, key, str, what)


def optional_text(data: dict, key: str, what: str) -> str | None:
    return field(data, key, (str, type(None)), what)


def whole(data: dict, key: str, what: str) -> int:
    return field(data, key, int, what)


def optional_whole(data: dict, key: str, what: str) -> int | None:
    return field(data, key, (int, type(None)), what)


def number(data: dict, key: str, what: str) -> float:
    return field(data, key, (int, float), what)


def optional_number(data: dict, key: str, what: str) -> float | None:
    return field(data, key, (int, float, type(None)), what)


def flag(data: dict, key: str, what: str) -> bool:
    return field(data, key, bool, what)


def state(data: dict, key: str, kind: type[State], what: str) -> State:
    try:
        return kind(text(data, key, what))
    except ValueError:
        raise SnapshotError(f"{what}.{key} is not one of {', '.join(kind)}: {data[key]!r}") from None


def listed(data: dict, key: str, parse: Callable[[object, str], Parsed], what: str) -> tuple[Parsed, ...]:
    items = field(data, key, list, what)
    return tuple(parse(item, f"{what}.{key}[{index}]") for index, item in enumerate(items))


def opaque_object(data: dict, key: str, what: str) -> dict:
    return copy.deepcopy(field(data, key, dict, what))


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)
