"""mDNS on a home's LAN (the NAT lab, tests/nat_lab.py: nothing reaches the host's network).

- Two nodes in one home link directly when the invite carried only an address that cannot
  work from inside the home (the router's public one, with no port forward): the joiner
  recognises the inviter's announcement by the inviter's key in the invite.
- A non-member on the LAN hears the announcement and learns no node id, mesh id, name or key
  from it; only a holder of the node's key can tell whose it is.
- A copy of a node's announcement next to someone else's address admits nobody: the joiner
  dials it, sees a key that is not the inviter's and hangs up before its hello, so the
  copier learns nothing either.
- Without multicast, mDNS is off with one log line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading

import pytest
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from meshdesk.adapters.mdns import LanPresence
from meshdesk.adapters.node_keys import NodeKey
from meshdesk.core.invite import decode_token
from meshdesk.core.lan_discovery import SERVICE_TYPE, tag_for
from tests.mesh_tools import node_key_of, quic_transport, record_messages, resigned
from tests.nat_lab import Nat, lab  # noqa: F401  (a fixture)
from tests.netns import Machine, NamespacedNode, ip, not_permitted, run_in
from tests.nodes import poll, start_node

pytestmark = pytest.mark.slow

SETTLE = 60.0


def start_with_mdns(machine: Machine, home, *arguments: str) -> NamespacedNode:
    """A node in `machine` with mDNS on (tests/nodes.py turns it off for every other test)."""
    class Bound(NamespacedNode):
        pass
    Bound.machine = machine
    return start_node(home, "--bind-host", machine.address, *arguments, prefix=machine.prefix,
                      node_class=Bound, environment={"MESHDESK_NO_MDNS": None})


def linked_alive(node, peer_id: str) -> bool:
    return any(peer["id"] == peer_id and peer["linked"] and peer["state"] == "alive"
               for peer in node.status()["peers"])


class Listener:
    """A stranger on the LAN with zeroconf: hears every MeshDesk announcement, and can announce."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self.heard: dict[str, ServiceInfo] = {}
        self.zeroconf = machine.call(lambda: Zeroconf(interfaces=[machine.address], ip_version=IPVersion.V4Only))
        self.browser = machine.call(lambda: ServiceBrowser(self.zeroconf, SERVICE_TYPE, handlers=[self._changed]))

    def _changed(self, zeroconf, service_type, name, state_change) -> None:
        if state_change is not ServiceStateChange.Removed:
            info = zeroconf.get_service_info(service_type, name, 3000)
            if info is not None:
                self.heard[name] = info

    def announcement_at(self, address: tuple[str, int]) -> ServiceInfo | None:
        return next((info for info in list(self.heard.values()) if info.port == address[1]
                     and address[0] in info.parsed_addresses()), None)

    def announce(self, properties: dict, port: int) -> None:
        instance = f"copy-{random.randrange(1 << 30)}"
        self.zeroconf.register_service(ServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=port,
                                                   properties=properties, server=f"{instance}.local.",
                                                   parsed_addresses=[self.machine.address]))

    def close(self) -> None:
        self.browser.cancel()
        self.zeroconf.close()


class Trap:
    """A QUIC listener with its own key, where a copied announcement points: notes who sends it
    packets, and keeps any message that arrives on a link."""

    def __init__(self, machine: Machine):
        self.loop = asyncio.new_event_loop()
        machine.call(lambda: threading.Thread(target=self.loop.run_forever, daemon=True).start())
        self.transport = quic_transport(NodeKey.generate())
        self.senders: set[tuple[str, int]] = set()
        self.messages: list[dict] = []
        self.port = self._run(self.transport.start(machine.address, 0, self._accepted))
        server = self.transport.server
        received = server.datagram_received

        def noted(data: bytes, origin) -> None:
            self.senders.add(origin)
            received(data, origin)
        server.datagram_received = noted

    def _run(self, work):
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(10)

    async def _accepted(self, link) -> None:
        await record_messages(link, self.messages)

    def close(self) -> None:
        self._run(self.transport.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def home_of_three(lab, tmp_path):
    """A home of three machines, and a random mesh port (the router forwards none)."""
    home = lab.home(Nat.ENDPOINT_INDEPENDENT, machines=3)
    started = []
    yield home, random.randint(30000, 39999), started
    for node in started:
        node.stop()


def invite_through_the_router(founder, home, port: int) -> str:
    """The founder's invite naming only the router's public address: no way in from the LAN."""
    token = decode_token(founder.invite_token())
    return resigned(token, node_key_of(founder.home), addresses=((home.wan_address, port),)).encode()


def test_two_nodes_in_one_home_link_directly_and_a_stranger_listening_learns_no_one(home_of_three, tmp_path):
    home, port, started = home_of_three
    first, second, third = home.machines
    listener = Listener(third)
    try:
        founder = start_with_mdns(first, tmp_path / "founder", "--client", "--name", "founder-laptop",
                                  "--bind-port", str(port))
        started.append(founder)
        joiner = start_with_mdns(second, tmp_path / "joiner", "--client", "--name", "joiner-laptop",
                                 "--join", invite_through_the_router(founder, home, port))
        started.append(joiner)
        poll(lambda: linked_alive(joiner, founder.node_id) and linked_alive(founder, joiner.node_id), SETTLE,
             interval=0.2, message=f"the two linked over the LAN: {joiner.describe()}")

        info = poll(lambda: listener.announcement_at((first.address, port)), SETTLE,
                    message="the founder's announcement")
        mesh_id, key = founder.status()["mesh"]["id"], node_key_of(founder.home).public_bytes
        said = repr((info.name, info.server, info.properties)).lower()
        for secret in (founder.node_id, mesh_id, "founder-laptop", key.hex(), first.name):
            assert secret.lower() not in said, secret
        assert set(info.properties) == {b"v", b"s", b"t"}
        # whose it is, only a holder of the key can tell
        salt, tag = (bytes.fromhex(info.properties[name].decode()) for name in (b"s", b"t"))
        assert tag == tag_for(key, salt) and tag != tag_for(node_key_of(joiner.home).public_bytes, salt)
    finally:
        listener.close()


def test_a_copied_announcement_admits_nobody_and_hears_nothing(home_of_three, tmp_path):
    home, port, started = home_of_three
    first, second, third = home.machines
    listener, trap = Listener(third), Trap(third)
    try:
        founder = start_with_mdns(first, tmp_path / "founder", "--client", "--bind-port", str(port))
        token = invite_through_the_router(founder, home, port)
        copied = poll(lambda: listener.announcement_at((first.address, port)), SETTLE,
                      message="the founder's announcement").properties
        founder.stop()  # gone: only the copy is left on the LAN
        listener.announce(copied, trap.port)
        joiner = start_with_mdns(second, tmp_path / "joiner", "--client", "--join", token)
        started.append(joiner)
        poll(lambda: any(host == second.address for host, _ in trap.senders), SETTLE, interval=0.2,
             message="the joiner to dial the copy")
        poll(lambda: "not the node we meant to reach" in joiner.describe(), SETTLE,
             message="the joiner to refuse the copy")
        assert trap.messages == []  # not even a hello: no mesh id, no key, no name
        assert joiner.process.poll() is None and not joiner.status()["peers"]
    finally:
        trap.close()
        listener.close()


def test_without_multicast_mdns_is_off_with_one_log_line(caplog):
    """In a namespace with nothing but loopback, the address mDNS was given is on no interface."""
    reason = not_permitted()
    if reason:
        pytest.skip(reason)
    machine = Machine(f"mdmc{random.randrange(1 << 24):06x}", "10.250.0.5")
    ip("netns", "add", machine.name)

    async def start() -> bool:
        presence = LanPresence(lambda *heard: None)
        return await presence.start(4242, [machine.address], {"v": "1"})
    try:
        ip("link", "set", "lo", "up", namespace=machine.name)
        with caplog.at_level(logging.INFO, logger="meshdesk.adapters.mdns"):
            assert machine.call(lambda: asyncio.run(start())) is False
    finally:
        run_in(None, "ip", "netns", "del", machine.name)
    lines = [record for record in caplog.records if record.name == "meshdesk.adapters.mdns"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and "mDNS is off" in lines[0].message
