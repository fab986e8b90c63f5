"""A MeshDesk node: its identity, the models it serves, and the snapshot views observe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from meshdesk.core.invite import decode_token
from meshdesk.core.openai_api import GenerationRequest
from meshdesk.node.interfaces import ModelStatus, UnknownModel
from meshdesk.node.mesh import JoinRefused
from meshdesk.node.model_host import ModelHost
from meshdesk.node.offer import Offer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeIdentity:
    id: str
    name: str
    home: Path
    version: str


class Node:
    """Owns the model hosts and answers the gateway's questions; the API and UI observe it."""

    def __init__(self, identity: NodeIdentity, model_hosts: list[ModelHost], mesh=None,
                 secrets_note: dict | None = None, offer: Offer | None = None):
        self.identity = identity
        self.offer = offer or Offer(measured_bytes=0, client=True)
        self.mesh = mesh
        self.secrets_note = secrets_note or {}
        self.model_hosts = {host.model_id: host for host in model_hosts}
        self.aliases: dict[str, str] = {}
        self.api_port: int | None = None
        self.listeners: list[Callable[[], None]] = []
        self.background_jobs: list[Callable[[], Awaitable[None]]] = []  # run once at start
        for host in model_hosts:
            host.on_change = self._notify
        if mesh is not None:
            mesh.on_change = self._notify

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
            "secrets": self.secrets_note,
            "offer": self.offer.to_dict(),
            **(self.mesh.status() if self.mesh is not None else {"mesh": None, "peers": []}),
        }

    def mint_invite(self, expires_in: int) -> dict:
        token = self._mesh().mint_invite(expires_in)
        return {"token": token.encode(), "link": token.link(), "expires_at": token.expires_at,
                "token_id": token.token_id}

    def revoke(self, token_text: str) -> None:
        """Raises ValueError (TokenError is one) with a reason for the user."""
        self._mesh().revoke(decode_token(token_text))

    def remove(self, node_id: str) -> None:
        self._mesh().remove(node_id)

    def set_capacity_cap(self, gigabytes: float | None) -> None:
        """Caps what this node offers (the desktop slider, `--max-vram`); the mesh re-plans."""
        self.offer.set_cap_gigabytes(gigabytes)
        self._offer_changed()

    def set_donating(self, donating: bool) -> None:
        """Starts or stops offering capacity without leaving the mesh (the tray toggle)."""
        self.offer.donating = donating
        self._offer_changed()

    def _offer_changed(self) -> None:
        if self.mesh is not None:
            self.mesh.refresh_own_record()
        self._notify()

    async def join(self, token_text: str) -> None:
        """Joins a mesh from a token or link; raises ValueError with the reason it cannot."""
        token = decode_token(token_text)
        if self.mesh is None:
            raise ValueError("this node has no mesh service")
        try:
            joined = await self.mesh.join(token)
        except JoinRefused as refusal:
            raise ValueError(f"cannot join: {refusal}") from None
        if not joined:
            raise ValueError("cannot reach the inviting node; check the address and try again")
        self._notify()

    def _mesh(self):
        if self.mesh is None or self.mesh.mesh_id is None:
            raise ValueError("this node is not in a mesh yet")
        return self.mesh

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
            if self.mesh is not None:
                tasks.create_task(self.mesh.run(), name="mesh")
            for job in self.background_jobs:
                tasks.create_task(job())
            tasks.create_task(asyncio.Event().wait(), name="until cancelled")
