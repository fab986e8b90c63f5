"""What the node offers its adapters and views, and the failures they must translate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from meshdesk.core.openai_api import GenerationRequest


class ModelUnavailable(Exception):
    """The model cannot answer now; the client may retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 2):
        super().__init__(message)
        self.retry_after = retry_after


class UnknownModel(Exception):
    """No model of that name is served here."""


@dataclass(frozen=True)
class ModelStatus:
    id: str
    path: str
    state: str
    error: str | None = None
    pid: int | None = None  # the model host child, for diagnostics

    def to_dict(self) -> dict:
        return {"id": self.id, "state": self.state, "path": self.path, "error": self.error,
                "pid": self.pid}


class Gateway(Protocol):
    """What the API server needs from a node."""

    def model_statuses(self) -> list[ModelStatus]: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[dict]:
        """Events: {"type": "delta", "text"}..., then {"type": "finish", "finish_reason", "usage"}."""
        ...

    def status(self) -> dict: ...
