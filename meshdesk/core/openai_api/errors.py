"""A client's mistake, in OpenAI's error shape, and how its values are named in the message."""

from __future__ import annotations

import json
from typing import Any


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class RequestError(Exception):
    """A client's mistake, reported in OpenAI's error shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def to_body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def describe(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = json_type(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def valid_text(text: str, param: str) -> str:
    # JSON escapes can smuggle in lone surrogates, which no tokenizer can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"'{param}' contains invalid Unicode (a lone surrogate)", param=param) from None
    return text
