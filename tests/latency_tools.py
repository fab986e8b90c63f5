"""Delaying proxies on split links: in front of a MeshDesk member's data plane (through the
test-only MESHDESK_TEST_DATA_ROUTES, core/data_routes.py) or a direct rpc worker."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from meshdesk.core.data_routes import ENVIRONMENT_VARIABLE
from tests.delay_proxy import DelayProxy


@dataclass
class ProxiedMember:
    """A member node to be started on `mesh_port` (its --bind-port), and the proxy that the
    host dials in its place."""

    mesh_port: int
    proxy: DelayProxy

    @property
    def route(self) -> str:
        host, port = self.proxy.address
        return f"127.0.0.1:{self.mesh_port}={host}:{port}"


def free_mesh_port() -> int:
    """A port number free on 127.0.0.1 for both TCP and UDP (a mesh port takes both), for now."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no port number is free for both TCP and UDP")


def proxied_members(count: int) -> list[ProxiedMember]:
    """Started proxies, each in front of a mesh port that a member is yet to bind."""
    members = []
    for _ in range(count):
        port = free_mesh_port()
        proxy = DelayProxy(("127.0.0.1", port))
        proxy.start()
        members.append(ProxiedMember(port, proxy))
    return members


def routes_environment(members: list[ProxiedMember]) -> dict[str, str]:
    """The host node's environment: its data links to these members go through their proxies."""
    return {ENVIRONMENT_VARIABLE: ",".join(member.route for member in members)}


def proxied_endpoint(worker_port: int) -> tuple[DelayProxy, str]:
    """A started proxy in front of a direct rpc worker, and the --rpc endpoint to give instead."""
    proxy = DelayProxy(("127.0.0.1", worker_port))
    host, port = proxy.start()
    return proxy, f"{host}:{port}"
