"""A running node with its API and mesh: started, joined, run until asked to stop, shut down."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

from meshdesk.adapters import agent_apis, embeddings_routes
from meshdesk.adapters.openai_server import OpenAiServer
from meshdesk.core.data_routes import DataRoutesError
from meshdesk.core.invite import InviteToken
from meshdesk.core.local_api_policy import ApiAccess
from meshdesk.node.mesh import JoinRefused, MeshService
from meshdesk.node.node import Node

log = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"
JOIN_RETRY_SECONDS = 5.0
STARTUP_INVITE_SECONDS = 7 * 24 * 3600
RELAY_WAIT_SECONDS = 5.0  # the relays named get this long to register us before the first invite


class StartupFailed(Exception):
    """One line for the user; the process exits with code 2."""


def say(line: str) -> None:
    print(line, flush=True)


class Runtime:
    def __init__(self, node: Node, mesh: MeshService, join_tokens: list[InviteToken], api_port: int,
                 api_access: ApiAccess, mdns: bool = False):
        self.node = node
        self.mesh = mesh
        self.join_tokens = join_tokens
        self.api_port = api_port
        self.mdns = mdns  # announce and browse the LAN (off: --no-mdns)
        self.lan_presence = None
        self.server = OpenAiServer(node, api_access, routes=(embeddings_routes.add_routes,
                                                                agent_apis.add_routes))
        self.background: set[asyncio.Task] = set()

    async def start(self) -> None:
        try:
            self.mesh.read_data_routes()
        except DataRoutesError as error:
            raise StartupFailed(str(error)) from None
        await self._start_api()
        try:
            await self.mesh.bind()
        except OSError as error:
            raise StartupFailed(f"cannot open the mesh port: {error.strerror or error}; "
                                "choose another --bind-port") from None
        try:
            await self.mesh.start_relaying()
        except OSError as error:
            raise StartupFailed(f"cannot open the relay port: {error.strerror or error}; "
                                "choose another --serve-relay port") from None
        await self._start_lan_presence()
        if self.join_tokens:
            await self._join_or_retry()
        else:
            founded = self.mesh.load_or_create_mesh()
            say(f"{'Created' if founded else 'Resumed'} mesh {self.mesh.mesh_id} on port {self.mesh.port}.")
            if founded:  # a 7-day invite on every start would end up in journals and logs
                await self.mesh.wait_for_relays(RELAY_WAIT_SECONDS)  # so the invite carries our relayed address
                self.print_invite()
        self._write_runtime_file()

    async def _start_api(self) -> None:
        try:
            self.node.api_port = await self.server.start(self.api_port)
        except OSError as error:
            raise StartupFailed(f"cannot listen on 127.0.0.1:{self.api_port}: "
                                f"{error.strerror or error}; choose another --port") from None
        identity = self.node.identity
        say(f"MeshDesk node {identity.name} ({identity.id}), home {identity.home}")
        say(f"API: http://127.0.0.1:{self.node.api_port}/v1")

    async def _start_lan_presence(self) -> None:
        """mDNS, once the mesh port is bound: before joining, so the inviter may be heard on the
        LAN. Not for a node bound to loopback, which nothing on the LAN could reach."""
        hosts = self.mesh.lan_hosts()
        if not self.mdns or not hosts:
            return
        from meshdesk.adapters.mdns import LanPresence  # zeroconf is loaded only when used

        presence = LanPresence(self.mesh.lan_heard)
        if await presence.start(self.mesh.port, hosts, self.mesh.lan_announcement()):
            self.lan_presence = presence

    async def _join_or_retry(self) -> None:
        if await self._join_once():
            say(f"Joined mesh {self.mesh.mesh_id}.")
            return
        say("Cannot reach the inviting node yet; retrying in the background.")
        task = asyncio.ensure_future(self._keep_joining())
        self.background.add(task)

    async def _join_once(self) -> bool:
        for token in self.join_tokens:
            try:
                if await self.mesh.join(token):
                    return True
            except JoinRefused as refusal:
                raise StartupFailed(f"cannot join: {refusal}") from None
        return False

    async def _keep_joining(self) -> None:
        while True:
            await asyncio.sleep(JOIN_RETRY_SECONDS)
            try:
                if await self._join_once():
                    say(f"Joined mesh {self.mesh.mesh_id}.")
                    return
            except StartupFailed as failure:
                log.error("%s", failure)
                sys.stderr.write(f"meshdesk: error: {failure}\n")
                return

    def print_invite(self) -> None:
        """Only for a mesh founded now; `meshdesk invite` mints one when the user asks."""
        token = self.mesh.mint_invite(STARTUP_INVITE_SECONDS)
        say(f"Invite token: {token.encode()}")
        say(f"Invite link: {token.link()}")

    def _write_runtime_file(self) -> None:
        path = self.node.identity.home / RUNTIME_FILE
        path.write_text(json.dumps({"pid": os.getpid(), "api_port": self.node.api_port,
                                    "mesh_port": self.mesh.port}))

    def _remove_runtime_file(self) -> None:
        try:
            (self.node.identity.home / RUNTIME_FILE).unlink()
        except OSError:
            pass

    async def run_until(self, stop: asyncio.Event) -> int:
        node_task = asyncio.create_task(self.node.run())
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait([node_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
        await self.shutdown(node_task, stop_task)
        return 0

    async def shutdown(self, *tasks: asyncio.Task) -> None:
        for task in (*tasks, *self.background):
            task.cancel()
        await asyncio.gather(*tasks, *self.background, return_exceptions=True)
        if self.lan_presence is not None:
            try:
                await self.lan_presence.stop()
            except Exception as error:  # a goodbye on the LAN must never block quitting
                log.warning("stopping mDNS: %s", error)
        try:
            await self.mesh.leave()
        except Exception as error:  # leaving politely must never block quitting
            log.warning("leaving the mesh: %s", error)
        await self.server.stop()
        self._remove_runtime_file()

    async def serve(self, stop: asyncio.Event) -> int:
        try:
            await self.start()
        except StartupFailed as failure:
            sys.stderr.write(f"meshdesk: error: {failure}\n")
            await self.shutdown()
            return 2
        return await self.run_until(stop)
