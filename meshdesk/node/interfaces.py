"""What the node offers its adapters and views, and the failures they must translate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from meshdesk.core.openai_api import GenerationRequest
from meshdesk.core.status import ModelStatus, StatusSnapshot

__all__ = ["Gateway", "HostLost", "LinkClosed", "MessageLink", "ModelBusy", "ModelStatus", "ModelUnavailable",
           "SecretStore", "UnknownModel"]  # ModelStatus lives in core.status, with the rest of the snapshot


class ModelUnavailable(Exception):
    """The model cannot answer now; the client may retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 2):
        super().__init__(message)
        self.retry_after = retry_after


class ModelBusy(ModelUnavailable):
    """Every sequence of the model's host is answering and its queue is full: a 429, not a 503,
    so that clients back off for `retry_after` seconds as they do for a rate limit."""


class HostLost(ModelUnavailable):
    """The host of an answer went away mid-answer: its node (`node_gone`), or its model (the
    child exited, e.g. when a split member under it died). The gateway carries the answer on
    (`node.resume`)."""

    def __init__(self, message: str, host_id: str | None = None, node_gone: bool = False):
        super().__init__(message)
        self.host_id, self.node_gone = host_id, node_gone


class UnknownModel(Exception):
    """No model of that name is served here."""


class Gateway(Protocol):
    """What the API server needs from a node."""

    def model_statuses(self) -> list[ModelStatus]: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[dict]:
        """Events: {"type": "delta", "text"}..., then {"type": "finish", "finish_reason", "usage"}."""
        ...

    def status(self) -> StatusSnapshot: ...

    def mint_invite(self, expires_in: int) -> dict: ...

    def revoke(self, token_text: str) -> None: ...

    def remove(self, node_id: str) -> None: ...

    def make_admin(self, node_id: str) -> None: ...

    def set_capacity_cap(self, gigabytes: float | None) -> None: ...

    def set_donating(self, donating: bool) -> None: ...

    async def serve(self, model: str) -> str:
        """Asks the mesh to serve a model (a path or a `--model` name); its id. ValueError if unusable."""
        ...

    def drop(self, model: str) -> None: ...

    def rename(self, name: str) -> None: ...


class LinkClosed(Exception):
    """The connection to a peer is gone."""


class MessageLink(Protocol):
    """An encrypted connection to one peer that carries whole control messages."""

    plane: str                      # "quic" or "tls"
    remote_address: tuple[str, int]
    server_public_key: bytes | None  # the accepting side's TLS key, which the handshake binds to
    client_public_key: bytes | None  # the dialling side's TLS key (mutual TLS); None on QUIC

    def authenticated(self) -> None:
        """The handshake succeeded: the peer leaves the transport's pre-authentication limits."""
        ...

    async def send(self, message: dict) -> None: ...

    async def receive(self) -> dict:
        """The next message; raises LinkClosed, or FrameError for malformed bytes."""
        ...

    def close(self, reason: str = "") -> None: ...


class SecretStore(Protocol):
    """Where a node keeps its private key and mesh secret."""

    backend: str
    warning: str | None  # set when secrets are not in the OS keyring

    def get(self, name: str) -> bytes | None: ...

    def set(self, name: str, value: bytes) -> None: ...
