"""Observed addresses against a lying member, over real sockets (core.reachability's defences).

In the NAT lab (tests/nat_lab.py): a node at home behind an endpoint-independent router that
forwards the mesh port, as a user's port forward does, so members on the internet reach it at
the router's address, which the node cannot know by itself. They join with an invite naming
that address (signed with the node's own key, as `meshdesk invite` would once it knew it).

- A member that lies, a real node process whose handshake reports a made-up address, gets it
  shown in the victim's /api/status as one unconfirmed report, never into its gossip record,
  which the other members see.
- Two honest members that reached the node through the forward agree on where they see it: that
  address is advertised, in the record and the status, and the next invite carries it, so a
  fresh joiner on the internet gets in with the invite as minted.

On loopback: an `observed` that is not an [address, port] pair is refused in the handshake, and
the node stays up and linked with its members.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from dataclasses import dataclass

import pytest

from meshdesk.adapters.node_keys import NodeKey
from meshdesk.core.invite import decode_token
from meshdesk.node import handshake
from meshdesk.node.interfaces import LinkClosed
from tests.mesh_tools import credentials, node_key_of, quic_transport, resigned
from tests.nat_lab import Nat, lab  # noqa: F401  (a fixture)
from tests.netns import Machine, NamespacedNode, run_in, start_in
from tests.nodes import NodeProcess, poll
from tests.nodes import test_environment as node_environment

pytestmark = pytest.mark.slow

SETTLE = 30.0
BOGUS = ("203.0.113.9", 4000)  # where the liar claims it sees the victim: nothing of ours is there
# A node whose handshake says it sees every peer at BOGUS: the liar, a member like any other.
LIAR = ("import sys\n"
        "from meshdesk.node import handshake\n"
        f"handshake.observation = lambda link: {BOGUS!r}\n"
        "from meshdesk.app.cli import main\n"
        "sys.exit(main())\n")

PORT_FORWARD = """
table ip lab {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan0" meta l4proto {{ tcp, udp }} th dport {port} dnat to {machine}:{port}
    }}
}}
insert rule ip lab forward ct status dnat accept
"""


def start_liar(machine: Machine, home, *arguments: str) -> NodeProcess:
    class Bound(NamespacedNode):
        pass
    Bound.machine = machine
    command = [*machine.prefix, sys.executable, "-c", LIAR, "--home", str(home), "--port", "0",
               "--bind-host", machine.address, "--headless", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=node_environment())
    return Bound(process, home)


def observed(node) -> dict[tuple[str, int], dict]:
    return {tuple(entry["address"]): entry for entry in node.status()["node"].get("observed", [])}


def record_addresses(node, peer_id: str) -> set[tuple[str, int]] | None:
    """The addresses in `peer_id`'s gossip record, as `node` holds it."""
    found = next((peer for peer in node.status()["peers"] if peer["id"] == peer_id), None)
    return None if found is None else {tuple(address) for address in found["addresses"]}


def linked_alive(node, peer_id: str) -> bool:
    return any(peer["id"] == peer_id and peer["linked"] and peer["state"] == "alive"
               for peer in node.status()["peers"])


@dataclass
class ForwardedHome:
    """A victim at home behind a port forward, and the invite that names the forward."""

    lab: object
    victim: NodeProcess
    forwarded: tuple[str, int]
    token: str
    root: object
    started: list

    def start(self, name: str, token: str | None = None, liar: bool = False) -> NodeProcess:
        machine, home = self.lab.public(), self.root / name
        arguments = ("--client", "--name", name, "--join", token or self.token)
        node = start_liar(machine, home, *arguments) if liar else start_in(machine, home, *arguments)
        self.started.append(node)
        poll(lambda: linked_alive(self.victim, node.node_id), SETTLE, interval=0.2,
             message=f"{name} linked with the victim: {node.describe()}")
        return node

    def confirmed(self) -> bool:
        return observed(self.victim).get(self.forwarded, {}).get("advertised", False)


@pytest.fixture(scope="module")
def forwarded_home(lab, tmp_path_factory):
    root = tmp_path_factory.mktemp("forward")
    home = lab.home(Nat.ENDPOINT_INDEPENDENT)
    machine, port = home.machines[0], random.randint(30000, 39999)
    run_in(home.router.name, "nft", "-f", "-", stdin=PORT_FORWARD.format(port=port, machine=machine.address))
    victim = start_in(machine, root / "victim", "--client", "--name", "victim", "--bind-port", str(port))
    started = [victim]
    try:
        token = decode_token(victim.invite_token())
        forwarded = (home.wan_address, port)
        through_forward = resigned(token, node_key_of(victim.home), addresses=(forwarded,)).encode()
        yield ForwardedHome(lab, victim, forwarded, through_forward, root, started)
    finally:
        for node in started:
            node.stop()


def test_a_lying_member_alone_advertises_nothing_and_two_honest_members_confirm(forwarded_home):
    world, victim = forwarded_home, forwarded_home.victim
    liar = world.start("liar", liar=True)
    honest = world.start("honest-1")
    poll(lambda: BOGUS in observed(victim) and world.forwarded in observed(victim), SETTLE,
         message=f"both reports in the status: {victim.describe()}")
    shown = observed(victim)
    assert shown[BOGUS] == {"address": list(BOGUS), "direction": "inbound", "reporters": 1, "advertised": False}
    assert shown[world.forwarded]["reporters"] == 1 and not shown[world.forwarded]["advertised"]
    for member in (liar, honest):
        assert BOGUS not in (record_addresses(member, victim.node_id) or set())

    second = world.start("honest-2")
    poll(world.confirmed, SETTLE, message=f"the forward confirmed: {victim.describe()}")
    assert observed(victim)[world.forwarded]["reporters"] == 2
    assert not observed(victim)[BOGUS]["advertised"]
    for member in (honest, second, liar):  # the record every member sees
        poll(lambda: world.forwarded in (record_addresses(member, victim.node_id) or set()), SETTLE,
             message="the victim's record to carry the forward")
        assert BOGUS not in record_addresses(member, victim.node_id)


def test_an_invite_carries_the_confirmed_address_and_a_joiner_out_there_gets_in(forwarded_home):
    world, victim = forwarded_home, forwarded_home.victim
    while not world.confirmed():  # run alone: the two honest members this needs
        world.start(f"confirmer-{len(world.started)}")
        poll(lambda: world.confirmed() or len(world.started) < 3, SETTLE, message="the forward confirmed")
    status, minted = victim.post_json("/api/invite", {"expires_in": 600})
    assert status == 200
    addresses = decode_token(minted["token"]).addresses
    assert addresses[0] == (victim.machine.address, world.forwarded[1])  # the LAN's first
    assert world.forwarded in addresses and BOGUS not in addresses
    joiner = world.start("joiner", token=minted["token"])  # the invite as minted, unaltered
    assert linked_alive(joiner, victim.node_id)


def test_a_malformed_observation_is_refused_and_the_node_stays_up(node_factory, monkeypatch):
    founder = node_factory("--client")
    token_text = founder.invite_token()
    friend = node_factory("--client", "--join", token_text)
    poll(lambda: linked_alive(founder, friend.node_id), SETTLE, message="the friend linked")
    monkeypatch.setattr(handshake, "observation", lambda link: ("198.51.100.7", 70000))

    async def join_with_a_malformed_observation() -> Exception | None:
        key, token = NodeKey.generate(), decode_token(token_text)
        transport = quic_transport(key)
        try:
            link = await transport.connect(token.addresses[0])
            await handshake.dial(link, credentials(key, "mallory"), token.mesh_id, None,
                                 invite=token_text, expected_node_key=token.inviter_key)
        except (LinkClosed, ConnectionError, TimeoutError, handshake.HandshakeError) as error:
            return error
        finally:
            await transport.stop()
        return None

    assert asyncio.run(join_with_a_malformed_observation()) is not None, "the founder let mallory in"
    poll(lambda: any("'observed'" in refusal["reason"] for refusal in founder.status()["refusals"]), SETTLE,
         message=f"the refusal in the status: {founder.describe()}")
    assert founder.process.poll() is None
    assert "mallory" not in {peer["name"] for peer in founder.status()["peers"]}
    assert linked_alive(founder, friend.node_id) and linked_alive(friend, founder.node_id)
