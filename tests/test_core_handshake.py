"""The mesh handshake: its message parsers, its proofs, and both roles over an in-memory link."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.core import handshake as hs
from meshdesk.core.frames import FrameDecoder, encode_frame
from meshdesk.core.handshake import ACCEPT, DIAL, Auth, HandshakeError, Hello
from meshdesk.core.identity import mesh_id_for
from meshdesk.node import handshake
from meshdesk.node.handshake import Credentials
from meshdesk.node.interfaces import LinkClosed

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
NONCE = b"\x07" * 32
DELETE = object()  # in hello_wire/auth_wire: leave the field out


def hello_wire(**changes) -> dict:
    message = Hello(role=DIAL, mesh_id="0123456789abcdef", node_key=KEY_A, nonce=NONCE, name="alice",
                    versions={"app": "0.1.0", "protocol": 1, "rpc": "r1"}).to_wire()
    for name, value in changes.items():
        if value is DELETE:
            message.pop(name, None)
        else:
            message[name] = value
    return message


def auth_wire(**changes) -> dict:
    message = Auth(signature=b"\x01" * 64, mac=b"\x02" * 32).to_wire()
    for name, value in changes.items():
        if value is DELETE:
            message.pop(name, None)
        else:
            message[name] = value
    return message



# ---------------------------------------------------------------- parse_hello


def test_a_well_formed_hello_round_trips():
    original = Hello(role=ACCEPT, mesh_id="m" * 16, node_key=KEY_B, nonce=NONCE, name="bob",
                     versions={"protocol": 1}, invite="tok", purpose="rpc")
    parsed = hs.parse_hello(json.loads(json.dumps(original.to_wire())), ACCEPT)
    assert parsed == original
    assert parsed.node_id == original.node_id and len(parsed.node_id) == 20


@pytest.mark.parametrize("changes, fragment", [
    ({"type": DELETE}, "expected a hello message"),
    ({"type": "auth"}, "expected a hello message, got 'auth'"),
    ({"type": 5}, "expected a hello message"),
    ({"v": DELETE}, "mesh protocol None"),
    ({"v": 2}, f"mesh protocol 2, we speak {hs.PROTOCOL_VERSION}"),
    ({"v": 0}, "mesh protocol 0"),
    ({"v": "1"}, "mesh protocol '1'"),
    ({"v": True}, "mesh protocol True"),
    ({"v": 1.0}, "mesh protocol 1.0"),
    ({"role": ACCEPT}, "expected a dial hello, got role 'accept'"),
    ({"role": DELETE}, "got role None"),
    ({"mesh_id": DELETE}, "'mesh_id' must be a string"),
    ({"mesh_id": ""}, "'mesh_id' must be a string"),
    ({"mesh_id": 12}, "'mesh_id' must be a string"),
    ({"mesh_id": "m" * 65}, "'mesh_id' must be a string of 1 to 64"),
    ({"node_key": DELETE}, "'node_key' must be 32 bytes in hex"),
    ({"node_key": KEY_A.hex()[:-2]}, "'node_key' must be 32 bytes in hex"),
    ({"node_key": KEY_A.hex() + "00"}, "'node_key' must be 32 bytes in hex"),
    ({"node_key": KEY_A.hex()[:-1]}, "'node_key' must be 32 bytes in hex"),  # odd length
    ({"node_key": "zz" * 32}, "'node_key' must be 32 bytes in hex"),
    ({"node_key": list(KEY_A)}, "'node_key' must be 32 bytes in hex"),
    ({"nonce": "00" * 31}, "'nonce' must be 32 bytes in hex"),
    ({"nonce": None}, "'nonce' must be 32 bytes in hex"),
    ({"name": ""}, "'name' must be a string of 1 to 64"),
    ({"name": "n" * 65}, "'name' must be a string of 1 to 64"),
    ({"name": ["alice"]}, "'name' must be a string"),
    ({"versions": DELETE}, "'versions' must be a small object"),
    ({"versions": [1]}, "'versions' must be a small object"),
    ({"versions": {"x": "y" * 5000}}, "'versions' must be a small object"),
    ({"invite": ""}, "'invite' must be a string"),
    ({"invite": 7}, "'invite' must be a string"),
    ({"invite": "t" * 2049}, "'invite' must be a string of 1 to 2048"),
    ({"purpose": DELETE}, "'purpose' must be a string"),
    ({"purpose": {}}, "'purpose' must be a string"),
])
def test_malformed_hellos_are_refused(changes, fragment):
    with pytest.raises(HandshakeError) as raised:
        hs.parse_hello(hello_wire(**changes), DIAL)
    assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)


def test_hello_without_invite_parses_as_none_and_limits_are_inclusive():
    hello = hs.parse_hello(hello_wire(invite=None, name="n" * 64, mesh_id="m" * 64), DIAL)
    assert hello.invite is None and hello.name == "n" * 64


@pytest.mark.parametrize("reason, shown", [
    ("you were removed", "refused by peer: you were removed"),
    (None, "refused by peer: no reason"),
    (42, "refused by peer: no reason"),
    ("", "refused by peer: no reason"),
    ("two\nlines\r\x1b[31m", "refused by peer: two lines  [31m"),
])
def test_refusals_surface_their_reason_in_both_parsers(reason, shown):
    message = {"type": "refuse", "reason": reason}
    for parse in (lambda m: hs.parse_hello(m, DIAL), hs.parse_auth):
        with pytest.raises(HandshakeError) as raised:
            parse(message)
        assert str(raised.value) == shown


def test_refuse_message_is_short():
    message = hs.refuse_message("x" * 1000)
    assert message["type"] == "refuse" and len(message["reason"]) == 300
    with pytest.raises(HandshakeError, match="refused by peer: x+$"):
        hs.parse_auth(message)


# ---------------------------------------------------------------- parse_auth


def test_well_formed_auths_round_trip():
    for auth in (Auth(b"\x01" * 64, b"\x02" * 32), Auth(b"\x01" * 64, None),
                 Auth(b"\x01" * 64, b"\x02" * 32, b"\x03" * 32)):
        assert hs.parse_auth(json.loads(json.dumps(auth.to_wire()))) == auth


@pytest.mark.parametrize("changes, fragment", [
    ({"type": "hello"}, "expected a auth message, got 'hello'"),
    ({"type": DELETE}, "expected a auth message"),
    ({"signature": DELETE}, "'signature' must be 64 bytes"),
    ({"signature": "01" * 63}, "'signature' must be 64 bytes"),
    ({"signature": "01" * 65}, "'signature' must be 64 bytes"),
    ({"signature": 1}, "'signature' must be 64 bytes"),
    ({"mac": "02" * 31}, "'mac' must be 32 bytes"),
    ({"mac": "xyz"}, "'mac' must be 32 bytes"),
    ({"mac": 0}, "'mac' must be 32 bytes"),
    ({"mac": False}, "'mac' must be 32 bytes"),
    ({"mesh_secret": "03" * 33}, "'mesh_secret' must be 32 bytes"),
    ({"mesh_secret": ["03"]}, "'mesh_secret' must be 32 bytes"),
])
def test_malformed_auths_are_refused(changes, fragment):
    with pytest.raises(HandshakeError) as raised:
        hs.parse_auth(auth_wire(**changes))
    assert fragment in str(raised.value)


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize("own, peer, conflict", [
    ({"app": "1", "protocol": 1, "rpc": "r"}, {"app": "2", "protocol": 1, "rpc": "r"}, None),
    ({"protocol": 1, "rpc": "r"}, {"protocol": 2, "rpc": "r"}, "incompatible protocol version: peer has 2, this node has 1"),
    ({"protocol": 1, "rpc": "r"}, {"protocol": 1, "rpc": "s"}, "incompatible rpc version: peer has 's', this node has 'r'"),
    ({"protocol": 1, "rpc": "r"}, {"protocol": "1", "rpc": "r"}, "incompatible protocol version"),
    ({"protocol": 1, "rpc": "r"}, {"protocol": 2, "rpc": "s"}, "incompatible protocol version"),
    ({"protocol": 1, "rpc": "r"}, {}, None),
    ({"protocol": 1, "rpc": "r"}, {"rpc": None}, None),
    ({"protocol": 1, "rpc": None}, {"protocol": 1, "rpc": "s"}, None),
    ({}, {"protocol": 9, "rpc": "s"}, None),
])
def test_version_conflicts(own, peer, conflict):
    found = hs.version_conflict(own, peer)
    if conflict is None:
        assert found is None
    else:
        assert found is not None and found.startswith(conflict)


# ---------------------------------------------------------------- transcripts and proofs


def hello(role: str, key: bytes, nonce: bytes = NONCE, **changes) -> Hello:
    fields = dict(role=role, mesh_id="0123456789abcdef", node_key=key, nonce=nonce, name="n",
                  versions={"protocol": 1})
    fields.update(changes)
    return Hello(**fields)


def test_transcript_binds_the_connection_and_both_hellos():
    dialler, acceptor = hello(DIAL, KEY_A), hello(ACCEPT, KEY_B, b"\x09" * 32)
    base = hs.transcript(dialler, acceptor, KEY_B, "quic")
    assert base == hs.transcript(dialler, acceptor, KEY_B, "quic")
    variants = [
        hs.transcript(dialler, acceptor, b"\xee" * 32, "quic"),  # another TLS key: a relay
        hs.transcript(dialler, acceptor, KEY_B, "tls"),          # another plane
        hs.transcript(hello(DIAL, KEY_A, b"\x08" * 32), acceptor, KEY_B, "quic"),
        hs.transcript(dialler, hello(ACCEPT, KEY_B, NONCE), KEY_B, "quic"),
        hs.transcript(hello(DIAL, KEY_A, invite="tok"), acceptor, KEY_B, "quic"),
        hs.transcript(hello(DIAL, KEY_A, purpose="rpc"), acceptor, KEY_B, "quic"),
        hs.transcript(hello(DIAL, KEY_A, mesh_id="f" * 16), acceptor, KEY_B, "quic"),
        hs.transcript(dialler, acceptor, KEY_A, "quic"),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert len(base) == 32


def test_membership_macs_need_the_same_secret_transcript_and_role():
    digest = hs.transcript(hello(DIAL, KEY_A), hello(ACCEPT, KEY_B), KEY_B, "quic")
    other_digest = hs.transcript(hello(DIAL, KEY_A), hello(ACCEPT, KEY_B), KEY_B, "tls")
    secret, other_secret = b"s" * 32, b"t" * 32
    mac = hs.membership_mac(secret, digest, DIAL)
    assert hs.mac_matches(secret, digest, DIAL, mac)
    assert not hs.mac_matches(other_secret, digest, DIAL, mac)
    assert not hs.mac_matches(secret, other_digest, DIAL, mac)
    assert not hs.mac_matches(secret, digest, ACCEPT, mac)  # no reflecting the dialler's proof back
    assert not hs.mac_matches(secret, digest, DIAL, None)
    assert not hs.mac_matches(secret, digest, DIAL, mac[:-1] + bytes([mac[-1] ^ 1]))
    assert hs.signed_statement(digest, DIAL) != hs.signed_statement(digest, ACCEPT)


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
hex_texts = st.sampled_from([32, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(bytes.hex)
field_values = json_values | hex_texts | st.sampled_from([1, "hello", "auth", "refuse", DIAL, ACCEPT])
hello_keys = ["type", "v", "role", "mesh_id", "node_key", "nonce", "name", "versions", "invite", "purpose"]
auth_keys = ["type", "signature", "mac", "mesh_secret", "reason"]


def mutated(base: dict, keys: list[str]):
    return st.fixed_dictionaries({}, optional={key: field_values for key in keys}).map(
        lambda changes: {**base, **changes})


def parses_or_refuses(parse, message) -> None:
    try:
        parse(message)
    except HandshakeError as error:
        assert "\n" not in str(error) and len(str(error)) < 600


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.dictionaries(st.text(max_size=12), json_values, max_size=8),
                 mutated(hello_wire(), hello_keys),
                 st.fixed_dictionaries({}, optional={key: field_values for key in hello_keys})))
def test_any_json_object_into_parse_hello_parses_or_raises_handshake_error(message):
    parses_or_refuses(lambda m: hs.parse_hello(m, DIAL), message)
    parses_or_refuses(lambda m: hs.parse_hello(m, ACCEPT), message)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.dictionaries(st.text(max_size=12), json_values, max_size=8),
                 mutated(auth_wire(), auth_keys),
                 st.fixed_dictionaries({}, optional={key: field_values for key in auth_keys})))
def test_any_json_object_into_parse_auth_parses_or_raises_handshake_error(message):
    parses_or_refuses(hs.parse_auth, message)


# ---------------------------------------------------------------- both roles over an in-memory link


class MemoryLink:
    """One end of an in-memory MessageLink pair; messages go through the real frame codec."""

    def __init__(self, inbox: asyncio.Queue, outbox: asyncio.Queue, plane: str,
                 remote_address: tuple[str, int], server_public_key: bytes | None):
        self.inbox, self.outbox = inbox, outbox
        self.plane = plane
        self.remote_address = remote_address
        self.server_public_key = server_public_key
        self.client_public_key = None
        self.decoder = FrameDecoder()
        self.closed = False
        self.sent: list[dict] = []

    async def send(self, message: dict) -> None:
        if self.closed:
            raise LinkClosed("closed")
        self.sent.append(message)
        await self.outbox.put(encode_frame(message))

    async def receive(self) -> dict:
        frame = await self.inbox.get()
        if frame is None:
            self.inbox.put_nowait(None)
            raise LinkClosed("closed by peer")
        (message,) = self.decoder.feed(frame)
        return message

    def authenticated(self) -> None:
        pass

    def close(self, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)


def link_pair(server_public_key: bytes, plane: str = "quic") -> tuple[MemoryLink, MemoryLink]:
    """(dialler's end, acceptor's end); the dialler sees `server_public_key` as the TLS key."""
    forward, backward = asyncio.Queue(), asyncio.Queue()
    dialler_end = MemoryLink(backward, forward, plane, ("192.0.2.2", 7000), server_public_key)
    acceptor_end = MemoryLink(forward, backward, plane, ("192.0.2.1", 50123), None)
    return dialler_end, acceptor_end


class Node:
    def __init__(self, name: str, versions: dict | None = None):
        self.key = NodeKey.generate()
        self.credentials = Credentials(self.key.public_bytes, self.key.sign, verify_signature, name,
                                       versions or {"protocol": 1, "rpc": "r1"}, os.urandom)


SECRET = os.urandom(32)
MESH = mesh_id_for(SECRET)


def admit_members(hello: Hello) -> None:
    if hello.invite is not None and hello.invite != "good-invite":
        raise HandshakeError("invite token was revoked")


async def run_both(dial_call, accept_call):
    """Runs both roles at once; returns (dialler's result or error, acceptor's result or error)."""
    return await asyncio.wait_for(asyncio.gather(dial_call, accept_call, return_exceptions=True), 5)


def test_two_members_authenticate_each_other():
    alice, bob = Node("alice"), Node("bob")

    async def scenario():
        dialler_end, acceptor_end = link_pair(bob.key.public_bytes)
        return await run_both(
            handshake.dial(dialler_end, alice.credentials, MESH, SECRET, purpose="rpc",
                           expected_node_key=bob.key.public_bytes),
            handshake.accept(acceptor_end, bob.credentials, MESH, SECRET, admit_members))

    as_dialler, as_acceptor = asyncio.run(scenario())
    assert as_dialler.hello.node_key == bob.key.public_bytes and as_dialler.hello.name == "bob"
    assert as_acceptor.hello.node_key == alice.key.public_bytes and as_acceptor.hello.purpose == "rpc"
    assert as_dialler.mesh_secret is None and as_acceptor.mesh_secret is None


@pytest.mark.parametrize("dialler_secret, acceptor_secret", [
    (os.urandom(32), SECRET),   # an outsider dials a member
    (SECRET, os.urandom(32)),   # a member dials an outsider that claims the mesh id
])
def test_a_wrong_mesh_secret_is_refused_on_both_sides(dialler_secret, acceptor_secret):
    alice, bob = Node("alice"), Node("bob")

    async def scenario():
        dialler_end, acceptor_end = link_pair(bob.key.public_bytes)
        return await run_both(
            handshake.dial(dialler_end, alice.credentials, MESH, dialler_secret),
            handshake.accept(acceptor_end, bob.credentials, MESH, acceptor_secret, admit_members))

    as_dialler, as_acceptor = asyncio.run(scenario())
    assert isinstance(as_dialler, HandshakeError) and isinstance(as_acceptor, HandshakeError)
    assert "not a member of this mesh" in str(as_dialler)
    assert "could not prove it belongs to the mesh" in str(as_acceptor)


def test_a_dialler_without_secret_or_invite_is_refused():
    alice, bob = Node("alice"), Node("bob")

    async def scenario():
        dialler_end, acceptor_end = link_pair(bob.key.public_bytes)
        return await run_both(
            handshake.dial(dialler_end, alice.credentials, MESH, None),
            handshake.accept(acceptor_end, bob.credentials, MESH, SECRET, admit_members))

    as_dialler, as_acceptor = asyncio.run(scenario())
    assert isinstance(as_dialler, HandshakeError) and isinstance(as_acceptor, HandshakeError)


def test_a_joiner_with_a_good_invite_receives_the_mesh_secret():
    joiner, inviter = Node("joiner"), Node("inviter")
    admitted: list[Hello] = []

    def admit(hello: Hello) -> None:
        admitted.append(hello)
        admit_members(hello)

    async def scenario():
        dialler_end, acceptor_end = link_pair(inviter.key.public_bytes)
        results = await run_both(
            handshake.dial(dialler_end, joiner.credentials, MESH, None, invite="good-invite",
                           expected_node_key=inviter.key.public_bytes),
            handshake.accept(acceptor_end, inviter.credentials, MESH, SECRET, admit))
        return results, dialler_end.sent, acceptor_end.sent

    (as_dialler, as_acceptor), dialler_sent, acceptor_sent = asyncio.run(scenario())
    assert as_dialler.mesh_secret == SECRET
    assert as_acceptor.hello.invite == "good-invite" and admitted[0].invite == "good-invite"
    assert dialler_sent[1]["mac"] is None  # the joiner had nothing to prove membership with
    assert acceptor_sent[1]["mesh_secret"] == SECRET.hex()


def test_a_joiner_whose_invite_the_acceptor_rejects_learns_why_and_gets_no_secret():
    joiner, inviter = Node("joiner"), Node("inviter")

    async def scenario():
        dialler_end, acceptor_end = link_pair(inviter.key.public_bytes)
        results = await run_both(
            handshake.dial(dialler_end, joiner.credentials, MESH, None, invite="old-invite"),
            handshake.accept(acceptor_end, inviter.credentials, MESH, SECRET, admit_members))
        return results, acceptor_end.sent

    (as_dialler, as_acceptor), acceptor_sent = asyncio.run(scenario())
    assert str(as_dialler) == "refused by peer: invite token was revoked"
    assert isinstance(as_acceptor, HandshakeError)
    assert acceptor_sent == [{"type": "refuse", "reason": "invite token was revoked"}]


def test_incompatible_versions_are_refused_by_the_admission_check():
    alice = Node("alice", {"protocol": 1, "rpc": "other build"})
    bob = Node("bob")

    def admit(hello: Hello) -> None:
        conflict = hs.version_conflict(bob.credentials.versions, hello.versions)
        if conflict:
            raise HandshakeError(conflict)

    async def scenario():
        dialler_end, acceptor_end = link_pair(bob.key.public_bytes)
        return await run_both(handshake.dial(dialler_end, alice.credentials, MESH, SECRET),
                              handshake.accept(acceptor_end, bob.credentials, MESH, SECRET, admit))

    as_dialler, as_acceptor = asyncio.run(scenario())
    assert "incompatible rpc version" in str(as_dialler) and str(as_dialler).startswith("refused by peer")
    assert "incompatible rpc version" in str(as_acceptor)


def test_the_dialler_refuses_a_node_other_than_the_one_it_meant():
    alice, bob, carol = Node("alice"), Node("bob"), Node("carol")

    async def scenario():
        dialler_end, acceptor_end = link_pair(bob.key.public_bytes)
        return await run_both(
            hanging_up(dialler_end, handshake.dial(dialler_end, alice.credentials, MESH, SECRET,
                                                   expected_node_key=carol.key.public_bytes)),
            handshake.accept(acceptor_end, bob.credentials, MESH, SECRET, admit_members))

    as_dialler, as_acceptor = asyncio.run(scenario())
    assert "not the node we meant to reach" in str(as_dialler)
    assert isinstance(as_acceptor, LinkClosed)


async def hanging_up(link: MemoryLink, running):
    """One side's handshake; on failure it hangs up, as mesh.py does."""
    try:
        return await running
    except HandshakeError:
        link.close("handshake failed")
        raise


def test_a_man_in_the_middle_relaying_the_handshake_is_detected():
    """Mallory accepts Alice's connection with her own TLS key and relays every message to Bob."""
    alice, bob, mallory = Node("alice"), Node("bob"), Node("mallory")

    async def relay(source: MemoryLink, target: MemoryLink, seen: list[dict]):
        try:
            while True:
                message = await source.receive()
                seen.append(message)
                await target.send(message)
        except LinkClosed:
            target.close()

    async def scenario():
        alice_end, mallory_front = link_pair(mallory.key.public_bytes)  # Alice sees Mallory's TLS key
        mallory_back, bob_end = link_pair(bob.key.public_bytes)
        seen: list[dict] = []
        relays = [asyncio.ensure_future(relay(mallory_front, mallory_back, seen)),
                  asyncio.ensure_future(relay(mallory_back, mallory_front, seen))]
        results = await run_both(
            hanging_up(alice_end, handshake.dial(alice_end, alice.credentials, MESH, SECRET)),
            handshake.accept(bob_end, bob.credentials, MESH, SECRET, admit_members))
        for task in relays:
            task.cancel()
        return results, seen

    (as_dialler, as_acceptor), seen = asyncio.run(scenario())
    assert isinstance(as_dialler, HandshakeError) and "someone is in between" in str(as_dialler)
    assert isinstance(as_acceptor, LinkClosed)  # Bob never got a proof to accept
    assert [message["type"] for message in seen] == ["hello", "hello"]  # Alice sent no auth


def test_without_the_key_check_a_relay_still_fails_the_bound_proofs(monkeypatch):
    """Defence in depth: the transcript binds the TLS key, so relayed proofs do not verify."""
    alice, bob, mallory = Node("alice"), Node("bob"), Node("mallory")
    monkeypatch.setattr(handshake, "check_acceptor_key", lambda link, hello, expected: None)

    async def relay(source: MemoryLink, target: MemoryLink):
        try:
            while True:
                await target.send(await source.receive())
        except LinkClosed:
            target.close()

    async def scenario():
        alice_end, mallory_front = link_pair(mallory.key.public_bytes)
        mallory_back, bob_end = link_pair(bob.key.public_bytes)
        relays = [asyncio.ensure_future(relay(mallory_front, mallory_back)),
                  asyncio.ensure_future(relay(mallory_back, mallory_front))]
        results = await run_both(
            hanging_up(alice_end, handshake.dial(alice_end, alice.credentials, MESH, SECRET)),
            hanging_up(bob_end, handshake.accept(bob_end, bob.credentials, MESH, SECRET, admit_members)))
        for task in relays:
            task.cancel()
        return results

    as_dialler, as_acceptor = asyncio.run(scenario())
    assert isinstance(as_acceptor, HandshakeError) and "could not prove it holds its node key" in str(as_acceptor)
    assert isinstance(as_dialler, LinkClosed)  # Bob hung up; Alice accepted nothing
