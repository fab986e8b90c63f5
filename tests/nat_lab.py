"""A NAT lab for tests: homes behind masquerading routers on a small internet (root, nftables).

    internet (namespace md<tag>i): bridge "net", 198.18.X.0/24, gateway 198.18.X.1
      |                      |                              |
    public machine         router of home 1               router of home 2        ...
    md<tag>p1              md<tag>r1                      md<tag>r2
    198.18.X.11            wan0 198.18.X.101              wan0 198.18.X.102
                           masquerade (endpoint-          masquerade fully-random
                           independent), firewall         (symmetric), firewall
                           lan 10.Y.1.1/24                lan 10.Y.2.1/24
                             |                              |
                           machine md<tag>h1m1            machine md<tag>h2m1
                           10.Y.1.11 (default via .1)     10.Y.2.11

Every box is a network namespace; veth pairs are made straight inside the namespaces they join,
so nothing of a lab lives in the root namespace and deleting the namespaces removes it all. The
tag, X and Y are random per run, so runs never collide.

A router forwards, masquerades what leaves by wan0 and, as a home router does, drops whatever
arrives on wan0 that is not part of a flow a machine started (counted, `Home.unsolicited_dropped`).
Dropping before conntrack confirms the packet also keeps the mapping endpoint-independent: an
early punch packet from a peer leaves no entry that would make the machine's own later packet to
that peer take another port.

- Endpoint-independent (EIM): plain `masquerade` keeps a UDP socket's source port whenever the
  resulting flow is unused, so a socket keeps one public address and port whatever it sends to.
  Two machines of one home could still collide on a port; each gets its own ephemeral port
  range (`ip_local_port_range` is per namespace), so sockets bound to port 0 never do. Filtering
  is conntrack's: only the exact address and port a mapping sent to gets in (port-restricted).
- Symmetric: `masquerade fully-random` picks a random public port for every new flow, so each
  destination sees the socket from another port, and a peer's packet to the port another
  destination saw is unsolicited.

A node runs in a machine as in tests/netns.py (`start_in`, `Machine.call`).
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import socket
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest

from tests.netns import Machine, ip, not_permitted, run_in

GATEWAY, PUBLIC_FIRST, WAN_FIRST, LAN_FIRST = 1, 11, 101, 11
PORTS_PER_MACHINE = 4000  # each home machine's own ephemeral range, from 20000


class Nat(StrEnum):
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    SYMMETRIC = "symmetric"


MASQUERADE = {Nat.ENDPOINT_INDEPENDENT: "masquerade", Nat.SYMMETRIC: "masquerade fully-random"}

ROUTER_RULES = """
table ip lab {{
    counter unsolicited {{}}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan0" ct state != {{ established, related }} counter name "unsolicited" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "wan0" ct state != {{ established, related }} counter name "unsolicited" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" {masquerade}
    }}
}}
"""


def lab_not_permitted() -> str | None:
    """Why a NAT lab cannot be built here (namespaces, `nft`), or None when it can."""
    reason = not_permitted()
    if reason:
        return reason
    if shutil.which("nft") is None:
        return "no `nft` command (nftables; `make setup` installs it as root with apt)"
    name = f"mdprobe{secrets.token_hex(3)}"
    try:
        ip("netns", "add", name)
        run_in(name, "nft", "add", "table", "ip", "probe")
    except OSError as error:
        return f"nftables is not permitted in a network namespace: {error}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


@dataclass
class Home:
    """A router (its `address`: the public one, on wan0) and the machines on its LAN."""

    number: int
    nat: Nat
    router: Machine
    lan_prefix: str   # the LAN's /24, "10.Y.k"
    machines: list[Machine] = field(default_factory=list)

    @property
    def wan_address(self) -> str:
        return self.router.address

    def unsolicited_dropped(self) -> int:
        """Packets from the internet that no flow of a machine let in, so far."""
        listing = json.loads(run_in(self.router.name, "nft", "-j", "list", "counter", "ip", "lab", "unsolicited"))
        return next(item["counter"]["packets"] for item in listing["nftables"] if "counter" in item)


@dataclass
class Lab:
    """An internet to which `public` adds machines and `home` adds homes. `remove` undoes all."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)
    public_machines: list[Machine] = field(default_factory=list)
    homes: list[Home] = field(default_factory=list)

    def __post_init__(self):
        self.internet_prefix = f"198.{random.randint(18, 19)}.{random.randrange(256)}"  # 198.18.0.0/15
        self.lan_second = random.randint(16, 250)

    @property
    def internet(self) -> str:
        return f"md{self.tag}i"

    @property
    def gateway(self) -> str:
        return f"{self.internet_prefix}.{GATEWAY}"

    def open(self) -> None:
        """The internet: a namespace with the bridge every public address sits on."""
        self._namespace(self.internet)
        ip("link", "add", "net", "type", "bridge", namespace=self.internet)
        ip("link", "set", "net", "up", namespace=self.internet)
        ip("addr", "add", f"{self.gateway}/24", "dev", "net", namespace=self.internet)

    def public(self) -> Machine:
        """A machine straight on the internet (a public node, a relay host)."""
        number = len(self.public_machines) + 1
        machine = Machine(f"md{self.tag}p{number}", f"{self.internet_prefix}.{PUBLIC_FIRST - 1 + number}")
        self._namespace(machine.name)
        self._plug(machine.name, "eth0", self.internet, f"p{number}", "net")
        self._address(machine.name, "eth0", machine.address, self.gateway)
        self.public_machines.append(machine)
        return machine

    def home(self, nat: Nat, machines: int = 1) -> Home:
        """A router doing `nat` between the internet and a LAN of `machines` machines."""
        number = len(self.homes) + 1
        router = Machine(f"md{self.tag}r{number}", f"{self.internet_prefix}.{WAN_FIRST - 1 + number}")
        home = Home(number, nat, router, f"10.{self.lan_second}.{number}")
        self._namespace(router.name)
        self._plug(router.name, "wan0", self.internet, f"r{number}", "net")
        self._address(router.name, "wan0", router.address, self.gateway)
        ip("link", "add", "lan", "type", "bridge", namespace=router.name)
        ip("link", "set", "lan", "up", namespace=router.name)
        ip("addr", "add", f"{home.lan_prefix}.1/24", "dev", "lan", namespace=router.name)
        run_in(router.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run_in(router.name, "nft", "-f", "-", stdin=ROUTER_RULES.format(masquerade=MASQUERADE[nat]))
        self.homes.append(home)
        for _ in range(machines):
            self._home_machine(home)
        return home

    def _home_machine(self, home: Home) -> Machine:
        number = len(home.machines) + 1
        machine = Machine(f"md{self.tag}h{home.number}m{number}", f"{home.lan_prefix}.{LAN_FIRST - 1 + number}")
        self._namespace(machine.name)
        self._plug(machine.name, "eth0", home.router.name, f"m{number}", "lan")
        self._address(machine.name, "eth0", machine.address, f"{home.lan_prefix}.1")
        first = 20000 + (number - 1) * PORTS_PER_MACHINE
        run_in(machine.name, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={first} {first + PORTS_PER_MACHINE - 1}")
        home.machines.append(machine)
        return machine

    def _namespace(self, name: str) -> None:
        self.namespaces.append(name)  # before it exists, so a failure half-way still removes it
        ip("netns", "add", name)
        ip("link", "set", "lo", "up", namespace=name)

    @staticmethod
    def _plug(namespace: str, interface: str, other: str, other_end: str, bridge: str) -> None:
        """A veth pair from `namespace` to `other`, whose end joins `other`'s `bridge`."""
        ip("link", "add", interface, "netns", namespace, "type", "veth", "peer", "name", other_end, "netns", other)
        ip("link", "set", other_end, "master", bridge, "up", namespace=other)

    @staticmethod
    def _address(namespace: str, interface: str, address: str, gateway: str) -> None:
        ip("addr", "add", f"{address}/24", "dev", interface, namespace=namespace)
        ip("link", "set", interface, "up", namespace=namespace)
        ip("route", "add", "default", "via", gateway, namespace=namespace)

    def remove(self) -> None:
        """Every namespace made, with the interfaces inside (a veth goes with either end)."""
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@contextmanager
def nat_lab():
    """A lab with its internet up; removed afterwards, even when the body fails."""
    lab = Lab()
    try:
        lab.open()
        yield lab
    finally:
        lab.remove()


@pytest.fixture(scope="module")
def lab():
    """An empty lab (just the internet) for the whole module; skips where none can be built."""
    reason = lab_not_permitted()
    if reason:
        pytest.skip(reason)
    with nat_lab() as built:
        yield built


def seeded_home(root: Path, name: str, model: Path | None = None) -> Path:
    """A node's home under `root`, with `model` in its models folder (a hard link where the
    file system allows, else a symbolic one)."""
    home = root / name
    (home / "models").mkdir(parents=True, mode=0o700)
    if model is not None:
        try:
            (home / "models" / model.name).hardlink_to(model)
        except OSError:
            (home / "models" / model.name).symlink_to(model)
    return home


def udp_socket(machine: Machine, port: int = 0) -> socket.socket:
    """A UDP socket bound in `machine` (on every address): it stays in that namespace wherever used."""
    def make() -> socket.socket:
        made = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        made.bind(("0.0.0.0", port))
        return made
    return machine.call(make)


class ObservedAddressServer:
    """On a public machine, answers each datagram with the address and port it came from, as
    a STUN server does: `"198.18.0.101:20001"`."""

    def __init__(self, machine: Machine):
        self.socket = udp_socket(machine)
        self.address = (machine.address, self.socket.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                _, origin = self.socket.recvfrom(2048)
                if origin is None:
                    return  # shut down by `close`
                self.socket.sendto("{}:{}".format(*origin).encode(), origin)
            except OSError:
                return  # closed

    def close(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recvfrom
        except OSError:
            pass  # Linux says "not connected" of a UDP socket, yet wakes it
        self.socket.close()


def observed_address(sender: socket.socket, server: ObservedAddressServer, timeout: float = 5) -> tuple[str, int]:
    """Where `server` sees `sender` come from."""
    sender.settimeout(timeout)
    sender.sendto(b"where am I", server.address)
    while True:
        answer, origin = sender.recvfrom(2048)
        if origin == server.address:
            host, port = answer.decode().rsplit(":", 1)
            return host, int(port)


class RelayProcess:
    """`meshdesk relay` on a machine of the lab, at RELAY_PORT; `stop` ends it."""

    def __init__(self, machine: Machine, *arguments: str, port: int = 9338):
        from tests.nodes import meshdesk_command, test_environment

        self.address = (machine.address, port)
        self.process = subprocess.Popen([*machine.prefix, *meshdesk_command("relay", "--port", str(port), *arguments)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=test_environment())
        self.output: list[str] = []
        self.listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.listening.wait(30):
            self.stop()
            raise AssertionError(f"the relay did not start: {''.join(self.output)}")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            if "meshdesk relay: listening" in line:
                self.listening.set()

    @property
    def spec(self) -> str:
        return "{}:{}".format(*self.address)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Tap:
    """Every frame that crosses the lab's internet bridge, as an eavesdropper on the wire (or the
    relay's operator) would have it: `start`, then `payload()` is all the bytes seen so far."""

    ETH_P_ALL = 0x0003

    def __init__(self, lab: Lab):
        internet = Machine(lab.internet, lab.gateway)
        self.socket = internet.call(_raw_socket)
        self.frames: list[bytes] = []
        self.running = True
        threading.Thread(target=self._capture, daemon=True).start()

    def _capture(self) -> None:
        while self.running:
            try:
                self.frames.append(self.socket.recv(65535))
            except TimeoutError:
                continue
            except OSError:
                return

    def payload(self) -> bytes:
        return b"".join(self.frames)

    def udp_bytes_between(self, host: str) -> int:
        """Bytes of UDP frames to or from `host` (an IPv4 literal) seen so far."""
        raw = socket.inet_aton(host)
        return sum(len(frame) for frame in list(self.frames)
                   if len(frame) > 34 and frame[12:14] == b"\x08\x00" and frame[23] == 17
                   and raw in (frame[26:30], frame[30:34]))

    def close(self) -> None:
        self.running = False
        self.socket.close()


def _raw_socket() -> socket.socket:
    """Frames of every interface of the namespace: each bridge port, so every frame it forwards
    (each one twice, in and out)."""
    made = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(Tap.ETH_P_ALL))
    made.settimeout(0.5)
    return made


BLOCK_RULES = """
table ip block {{
    chain forward {{
        type filter hook forward priority -10; policy accept;
        ip saddr {peer} drop
    }}
}}
"""


def block_from(home: Home, peer: str) -> None:
    """The home's router drops all that comes from `peer` (a broken path between two ISPs)."""
    run_in(home.router.name, "nft", "-f", "-", stdin=BLOCK_RULES.format(peer=peer))


def unblock(home: Home) -> None:
    run_in(home.router.name, "nft", "delete", "table", "ip", "block")
