"""A MeshDesk node: its identity, the models it serves, and the snapshot views observe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from meshdesk.core.openai_api import GenerationRequest
from meshdesk.node.interfaces import ModelStatus, UnknownModel
from meshdesk.node.model_host import ModelHost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeIdentity:
    id: str
    name: str
    home: Path
    version: str


class Node:
    """Owns the model hosts and answers the gateway's questions; the API and UI observe it."""

    def __init__(self, identity: NodeIdentity, model_hosts: list[ModelHost]):
        self.identity = identity
        self.model_hosts = {host.model_id: host for host in model_hosts}
        self.aliases: dict[str, str] = {}
        self.api_port: int | None = None
        self.listeners: list[Callable[[], None]] = []
        for host in model_hosts:
            host.on_change = self._notify

    def add_alias(self, alias: str, model_id: str) -> None:
        self.aliases[alias] = model_id

    def model_statuses(self) -> list[ModelStatus]:
        return [host.status() for host in self.model_hosts.values()]

    def resolve(self, model: str) -> ModelHost:
        host = self.model_hosts.get(self.aliases.get(model, model))
        if host is None:
            served = ", ".join(sorted(self.model_hosts)) or "none"
            raise UnknownModel(f"The model '{model}' does not exist here (served: {served})")
        return host

    async def generate(self, request: GenerationRequest) -> AsyncIterator[dict]:
        async for event in self.resolve(request.model).generate(request):
            yield event

    def status(self) -> dict:
        return {
            "node": {
                "id": self.identity.id,
                "name": self.identity.name,
                "home": str(self.identity.home),
                "version": self.identity.version,
            },
            "models": [status.to_dict() for status in self.model_statuses()],
            "api_port": self.api_port,
        }

    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener` is called (on the event loop) whenever the snapshot may have changed."""
        self.listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    async def run(self) -> None:
        """Runs until cancelled, even after every model host has given up (e.g. failed to load):
        the node keeps serving its status and answering that the model failed."""
        async with asyncio.TaskGroup() as tasks:
            for host in self.model_hosts.values():
                tasks.create_task(host.run(), name=f"model host {host.model_id}")
        await asyncio.get_running_loop().create_future()
