"""The NAT lab (tests/nat_lab.py) behaves as the homes it stands for, and MeshDesk across it.

With plain sockets: behind the endpoint-independent router a UDP socket is seen from one public
address and port by every destination, behind the symmetric one from another port by each;
nothing unsolicited from the internet gets in, and a peer's early punch does not move a mapping;
two machines behind endpoint-independent routers punch a UDP path with simultaneous sends to the
addresses an observer saw, and between two symmetric routers the same punch fails (what relays
are for). A lab leaves nothing behind, and a home's LAN carries mDNS's multicast.

With nodes (slow): a member at home behind the endpoint-independent router joins a mesh founded
on the internet, and a split hosted at home with a member on the internet answers: every dial
goes out of the home, which is what works across NAT today.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.nat_lab import (Nat, ObservedAddressServer, lab, lab_not_permitted, nat_lab,  # noqa: F401  (a fixture)
                            observed_address, udp_socket)
from tests.netns import ip, run_in, start_in
from tests.nodes import poll

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "The history of the Roman Empire"
PUNCH_SECONDS = 10.0   # a punch that works ends as soon as both sides hear each other
HOPELESS_PUNCH_SECONDS = 2.0  # how long a punch that cannot work is tried


@pytest.fixture(scope="module")
def world(lab):
    """Two observers on the internet, two homes of each kind, one machine in each."""
    observers = [ObservedAddressServer(lab.public()), ObservedAddressServer(lab.public())]
    homes = {nat: (lab.home(nat), lab.home(nat)) for nat in Nat}
    yield observers, homes
    for observer in observers:
        observer.close()


def test_a_lab_leaves_nothing_behind_even_when_its_body_fails():
    reason = lab_not_permitted()
    if reason:
        pytest.skip(reason)
    with pytest.raises(RuntimeError):
        with nat_lab() as built:
            built.public()
            built.home(Nat.SYMMETRIC, machines=2)
            made = set(built.namespaces)
            raise RuntimeError("the test failed")
    left = {line.split()[0] for line in run_in(None, "ip", "netns", "list").splitlines() if line}
    assert len(made) == 5 and not made & left  # the internet, a machine, a router and two


def test_machines_of_one_home_hear_each_other_on_the_mdns_group(lab):
    """What mDNS needs: multicast on the LAN. (None of it leaves the home: Linux forwards
    multicast only for a multicast routing daemon, which no router here runs.)"""
    home = lab.home(Nat.ENDPOINT_INDEPENDENT, machines=2)
    listener = udp_socket(home.machines[0])
    group = socket.inet_aton("224.0.0.251") + socket.inet_aton(home.machines[0].address)
    listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
    sender = udp_socket(home.machines[1])
    sender.sendto(b"announce", ("224.0.0.251", listener.getsockname()[1]))
    listener.settimeout(5)
    assert listener.recvfrom(2048) == (b"announce", (home.machines[1].address, sender.getsockname()[1]))


def test_behind_an_endpoint_independent_router_every_destination_sees_one_address(world):
    (first, second), homes = world
    home = homes[Nat.ENDPOINT_INDEPENDENT][0]
    sender = udp_socket(home.machines[0])
    seen = {observed_address(sender, first), observed_address(sender, second)}
    assert seen == {(home.wan_address, sender.getsockname()[1])}  # the port kept, too


def test_behind_a_symmetric_router_each_destination_sees_another_port(world):
    (first, second), homes = world
    home = homes[Nat.SYMMETRIC][0]
    sender = udp_socket(home.machines[0])
    (first_host, first_port), (second_host, second_port) = (observed_address(sender, first),
                                                           observed_address(sender, second))
    assert first_host == second_host == home.wan_address
    assert first_port != second_port


@pytest.mark.parametrize("nat", list(Nat))
def test_nothing_unsolicited_from_the_internet_reaches_a_machine(world, lab, nat):
    """Only the address and port a mapping sent to gets back in; not another port of that host,
    not another host, not a packet routed straight to the private address."""
    (observer, _), homes = world
    home = homes[nat][1]
    machine = home.machines[0]
    receiver = udp_socket(machine)
    mapped = observed_address(receiver, observer)
    attacker_machine = lab.public_machines[1]
    ip("route", "replace", f"{home.lan_prefix}.0/24", "via", home.wan_address, namespace=attacker_machine.name)
    attacks = [(udp_socket(lab.public_machines[0]), mapped),   # the observer's host, another port
               (udp_socket(attacker_machine), mapped),         # another host
               (udp_socket(attacker_machine), (machine.address, receiver.getsockname()[1]))]  # routed in
    for attacker, target in attacks:
        dropped = home.unsolicited_dropped()
        attacker.sendto(b"unsolicited", target)
        poll(lambda: home.unsolicited_dropped() > dropped, 5, message="the router to drop the packet")
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recvfrom(2048)
    # the mapping itself works: what the observer sends now gets in
    observer.socket.sendto(b"solicited", mapped)
    receiver.settimeout(5)
    assert receiver.recvfrom(2048) == (b"solicited", observer.address)


def test_an_early_punch_leaves_the_endpoint_independent_mapping_as_it_was(world, lab):
    """The peer's packet arriving before the machine's own first one is dropped without a trace,
    so the machine's flow to that peer still keeps its port (Linux would pick another port if
    the early packet had left a conntrack entry)."""
    (observer, _), homes = world
    home = homes[Nat.ENDPOINT_INDEPENDENT][1]
    sender, peer = udp_socket(home.machines[0]), udp_socket(lab.public_machines[1])
    mapped = observed_address(sender, observer)
    dropped = home.unsolicited_dropped()
    peer.sendto(b"early punch", mapped)
    poll(lambda: home.unsolicited_dropped() > dropped, 5, message="the router to drop the early punch")
    sender.sendto(b"punch", (lab.public_machines[1].address, peer.getsockname()[1]))
    peer.settimeout(5)
    assert peer.recvfrom(2048) == (b"punch", mapped)


def punch(sender, peer: tuple[str, int], seconds: float) -> bool:
    """Sends to `peer` every 50 ms until a datagram from it arrives (True) or `seconds` pass."""
    sender.settimeout(0.05)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sender.sendto(b"punch", peer)
        try:
            _, origin = sender.recvfrom(2048)
        except TimeoutError:
            continue
        if origin == peer:
            for _ in range(3):  # so the peer, which may not have heard us yet, does
                sender.sendto(b"punch", peer)
            return True
    return False


def simultaneous_punch(observer, one, two, seconds: float = PUNCH_SECONDS) -> tuple[bool, bool]:
    """Each side learns its address from `observer`, as a member both reach would tell the
    other, and both send to the other's at once."""
    sockets = [udp_socket(home.machines[0]) for home in (one, two)]
    first_seen, second_seen = (observed_address(sender, observer) for sender in sockets)
    with ThreadPoolExecutor(2) as pool:
        outcomes = [pool.submit(punch, sockets[0], second_seen, seconds),
                    pool.submit(punch, sockets[1], first_seen, seconds)]
        return outcomes[0].result(), outcomes[1].result()


def test_two_endpoint_independent_homes_punch_a_udp_path(world):
    (observer, _), homes = world
    assert simultaneous_punch(observer, *homes[Nat.ENDPOINT_INDEPENDENT]) == (True, True)


def test_two_symmetric_homes_cannot_punch(world):
    (observer, _), homes = world
    one, two = homes[Nat.SYMMETRIC]
    dropped = one.unsolicited_dropped(), two.unsolicited_dropped()
    assert simultaneous_punch(observer, one, two, HOPELESS_PUNCH_SECONDS) == (False, False)
    # the punches arrived, from ports no mapping knew, and each router dropped them
    assert one.unsolicited_dropped() > dropped[0] and two.unsolicited_dropped() > dropped[1]


def seeded_home(root, name: str, model_path):
    home = root / name
    (home / "models").mkdir(parents=True, mode=0o700)
    os.link(model_path, home / "models" / model_path.name)
    return home


@pytest.fixture(scope="module")
def mesh_across_nat(lab, tmp_path_factory, default_model_path):
    """A founder on the internet and a member at home behind the endpoint-independent router,
    both with the model; the founder offers less memory, so the member at home hosts the split
    (both capped, so the order holds on any machine)."""
    root = tmp_path_factory.mktemp("nat")
    home_machine = lab.home(Nat.ENDPOINT_INDEPENDENT).machines[0]
    started = []
    try:
        founder = start_in(lab.public(), seeded_home(root, "founder", default_model_path),
                           "--model", str(default_model_path), "--split", "--threads", "1", "--max-vram", "1")
        started.append(founder)
        member = start_in(home_machine, seeded_home(root, "member", default_model_path),
                          "--join", founder.invite_token(), "--split", "--threads", "1", "--max-vram", "2")
        started.append(member)
        yield founder, member
    finally:
        for node in started:
            node.stop()


def linked_alive(node, peer_id: str) -> bool:
    return any(peer["id"] == peer_id and peer["linked"] and peer["state"] == "alive"
               for peer in node.status()["peers"])


@pytest.mark.slow
def test_a_member_behind_nat_joins_a_public_founder_and_they_gossip(mesh_across_nat):
    founder, member = mesh_across_nat
    poll(lambda: linked_alive(founder, member.node_id) and linked_alive(member, founder.node_id), 60,
         interval=0.2, message=f"both linked: {founder.describe()} {member.describe()}")


@pytest.mark.slow
def test_a_split_hosted_behind_nat_with_a_public_member_answers(mesh_across_nat):
    founder, member = mesh_across_nat

    def split_ready() -> bool:
        status = member.status()
        plans, models = status["plans"], status["models"]
        return bool(plans and plans[0]["state"] == "split" and plans[0]["host"] == member.node_id
                    and len(plans[0]["members"]) == 2 and models and models[0]["state"] == "ready")
    poll(split_ready, 120, interval=0.2, message=f"the split hosted at home: {member.describe()}")
    before = member.status()["traffic"]["round_trips"]
    assert member.complete(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, seed=1).strip()
    # the passes waited on the founder's layers, across the home's router (the rpc tunnel)
    assert member.status()["traffic"]["round_trips"] > before
