"""Linux network namespaces for tests: machines with their own addresses on one bridge (root only).

`network` builds a bridge in the root namespace and one namespace per machine, joined to it by a
veth pair, with a fresh /24 for the run (names and subnet are unique per run, so runs never
collide and a failed run leaves nothing that breaks the next). A machine may also get an
`unreachable` address, on an interface that carries its default route into a dead end, so it
believes that address is its outward one, though no other machine can reach it. Everything is removed afterwards, even
when a test fails.

A node in a namespace is started with `ip netns exec NAME python -m meshdesk ...`. Its API is on
127.0.0.1 inside the namespace, so the test talks to it from a thread that has entered the
namespace (`Machine.call`): sockets stay in the namespace they were made in.
"""

from __future__ import annotations

import ctypes
import os
import random
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field

import pytest

from tests.nodes import NodeProcess, start_node

CLONE_NEWNET = 0x40000000


def run_in(namespace: str | None, *command: str, stdin: str | None = None) -> str:
    """`command` inside `namespace` (here when None): its output, or OSError with its complaint."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    result = subprocess.run([*prefix, *command], input=stdin, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise OSError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def ip(*arguments: str, namespace: str | None = None) -> None:
    run_in(namespace, "ip", *arguments)


def not_permitted() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    name = f"mdprobe{secrets.token_hex(3)}"
    try:
        ip("netns", "add", name)
    except OSError as error:
        return f"cannot create a network namespace: {error}"
    ip("netns", "del", name)
    return None


@dataclass
class Machine:
    name: str          # the namespace
    address: str       # on the bridge, reachable from every other machine
    unreachable: str | None = None  # its outward address, which no other machine can reach

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def call(self, function, *arguments):
        """`function(*arguments)` in a thread inside this machine's namespace."""
        outcome: dict = {}

        def run() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                descriptor = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if libc.setns(descriptor, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(descriptor)
                outcome["value"] = function(*arguments)
            except BaseException as error:  # handed to the caller's thread
                outcome["error"] = error
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


@dataclass
class Network:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    machines: list[Machine] = field(default_factory=list)

    def __post_init__(self):
        second, third = random.randint(160, 239), random.randrange(0, 256, 2)
        self.subnet, self.unreachable_subnet = f"10.{second}.{third}", f"10.{second}.{third + 1}"

    @property
    def bridge(self) -> str:
        return f"mdbr{self.tag}"

    def build(self, count: int, unreachable: set[int] = frozenset()) -> list[Machine]:
        """`count` machines on the bridge; those numbered in `unreachable` (from 1) get an
        unreachable outward address too. Call `remove` afterwards, even when this raises."""
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        for index in range(1, count + 1):
            machine = Machine(f"md{self.tag}n{index}", f"{self.subnet}.{index}")
            self.machines.append(machine)
            outside, inside = f"md{self.tag}v{index}", f"md{self.tag}p{index}"
            ip("netns", "add", machine.name)
            ip("link", "set", "lo", "up", namespace=machine.name)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", machine.name)
            ip("link", "set", outside, "master", self.bridge, "up")
            ip("addr", "add", f"{machine.address}/24", "dev", inside, namespace=machine.name)
            ip("link", "set", inside, "up", namespace=machine.name)
            if index in unreachable:
                machine.unreachable = f"{self.unreachable_subnet}.{index}"
                # a veth pair with both ends here: what goes out on it never comes back
                road, dead_end = f"md{self.tag}u{index}", f"md{self.tag}x{index}"
                ip("link", "add", road, "type", "veth", "peer", "name", dead_end, namespace=machine.name)
                ip("addr", "add", f"{machine.unreachable}/24", "dev", road, namespace=machine.name)
                ip("link", "set", road, "up", namespace=machine.name)
                ip("link", "set", dead_end, "up", namespace=machine.name)
                ip("route", "add", "default", "dev", road, namespace=machine.name)
        return self.machines

    def remove(self) -> None:
        """Whatever was made: the namespaces (with what is inside), the veths and the bridge."""
        for index, machine in enumerate(self.machines, start=1):
            subprocess.run(["ip", "netns", "del", machine.name], capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "del", f"md{self.tag}v{index}"], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)


class NamespacedNode(NodeProcess):
    """A node process in a namespace; the test reaches its API from inside that namespace."""

    machine: Machine

    def get_json(self, path: str) -> dict:
        return self.machine.call(super().get_json, path)

    def post_json(self, path: str, body, timeout: float = 10):
        return self.machine.call(super().post_json, path, body, timeout)

    def complete(self, **request) -> str:
        """A completion through this node's API with the official client, from its namespace."""
        return self.machine.call(lambda: self.client().completions.create(**request).choices[0].text)


def start_in(machine: Machine, home, *arguments: str) -> NamespacedNode:
    """A node in `machine`'s namespace; its mesh port on the bridge address unless told otherwise."""
    class Bound(NamespacedNode):
        pass
    Bound.machine = machine
    return start_node(home, "--bind-host", machine.address, *arguments, prefix=machine.prefix, node_class=Bound)


@pytest.fixture(scope="module")
def three_machines():
    """Three namespaces on one bridge for the whole module; the third's outward address is
    unreachable. Skips where namespaces cannot be made."""
    reason = not_permitted()
    if reason:
        pytest.skip(reason)
    network = Network()
    try:
        yield network.build(3, unreachable={3})
    finally:
        network.remove()
