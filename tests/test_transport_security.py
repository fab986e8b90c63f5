"""Attacks on a real node's transports, over real sockets on loopback; the honest path still works.

A man in the middle with a crafted certificate, the private key at rest, invites and peer
names in output and logs, refusals and re-plans, log rotation. Floods and slow handshakes
before authentication: tests/test_preauth_attacks.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from meshdesk.adapters.node_keys import NodeKey
from meshdesk.adapters.secret_store import open_secret_store
from meshdesk.adapters.tls_transport import client_context, ed25519_key_in_certificate, load_chain
from meshdesk.core.handshake import DIAL, Hello
from meshdesk.core.identity import node_id_for
from meshdesk.core.invite import decode_token
from meshdesk.node import handshake
from meshdesk.node.linking import Dial, HandshakeFailed, connect_and_authenticate
from meshdesk.node.mesh_secrets import MESH_SECRET
from tests.mesh_tools import credentials, node_key_of, quic_transport, tls_transport
from tests.nodes import poll

pytestmark = pytest.mark.slow

ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def byte_search_key(der: bytes) -> bytes | None:
    """How the key used to be found: the first Ed25519 key prefix anywhere in the certificate."""
    start = der.find(ED25519_SPKI_PREFIX)
    return None if start < 0 else der[start + 12:start + 44]


def crafted_certificate(attacker: NodeKey, victim_key: bytes) -> bytes:
    """DER, self-signed for the attacker's key; its subject holds the victim's key, prefix and
    all, before the real key. (Built with a placeholder name of that length, which is then
    replaced and the certificate signed again: x509 builders will not write such bytes.)"""
    placeholder = "A" * (len(ED25519_SPKI_PREFIX) + len(victim_key))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, placeholder, _type=x509.name._ASN1Type.T61String)])
    own = attacker.certificate("x")
    template = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(attacker.private_key.public_key()).serial_number(7)
                .not_valid_before(own.not_valid_before_utc).not_valid_after(own.not_valid_after_utc)
                .sign(attacker.private_key, None))
    der, tbs = template.public_bytes(serialization.Encoding.DER), template.tbs_certificate_bytes
    crafted_tbs = tbs.replace(placeholder.encode(), ED25519_SPKI_PREFIX + victim_key)
    assert der.endswith(template.signature) and len(crafted_tbs) == len(tbs)
    return der.replace(tbs, crafted_tbs)[:-64] + attacker.sign(crafted_tbs)


def pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


class Relay:
    """The man in the middle: TLS to the dialler with a crafted certificate, TLS to the victim
    with its own, and every byte copied across. `bytes_relayed` counts what crossed it."""

    def __init__(self, attacker: NodeKey, victim_key: bytes, victim: tuple[str, int]):
        self.victim = victim
        self.server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_chain(self.server_ssl, pem(crafted_certificate(attacker, victim_key)), attacker.private_key_pem())
        self.client_ssl = client_context(attacker.certificate_pem("relay"), attacker.private_key_pem())
        self.bytes_relayed = 0

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self.accepted, "127.0.0.1", 0, ssl=self.server_ssl)
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]

    async def accepted(self, reader, writer) -> None:
        try:
            victim_reader, victim_writer = await asyncio.open_connection(*self.victim, ssl=self.client_ssl)
        except (OSError, ssl.SSLError):
            writer.close()
            return
        await asyncio.gather(self.copy(reader, victim_writer), self.copy(victim_reader, writer),
                             return_exceptions=True)

    async def copy(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                self.bytes_relayed += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def stop(self) -> None:
        self.server.close()


def member_of(founder) -> tuple[str, bytes, bytes, tuple[str, int]]:
    """(mesh id, mesh secret, the founder's node key, its mesh address) from the founder's home."""
    token = decode_token(founder.invite_token())
    secret = open_secret_store(founder.home).get(MESH_SECRET)
    return token.mesh_id, secret, node_key_of(founder.home).public_bytes, tuple(token.addresses[0])


async def dial_data_plane(key: NodeKey, address, mesh_id: str, secret: bytes, expected: bytes):
    dial = Dial(mesh_id, secret, purpose="api", expected_node_key=expected)
    link, identity = await connect_and_authenticate(tls_transport(key), address, credentials(key), dial, 5)
    link.close()
    return identity


def test_a_relay_with_the_victims_key_in_its_certificate_subject_cannot_pass_the_handshake(node_factory):
    founder = node_factory("--client")
    mesh_id, secret, founder_key, address = member_of(founder)
    attacker, honest = NodeKey.generate(), NodeKey.generate()
    crafted = crafted_certificate(attacker, founder_key)
    assert byte_search_key(crafted) == founder_key  # the crafted certificate fools a byte search

    async def attack():
        relay = Relay(attacker, founder_key, address)
        relay_address = await relay.start()
        try:
            with pytest.raises(HandshakeFailed) as failure:
                await dial_data_plane(honest, relay_address, mesh_id, secret, founder_key)
            assert "someone is in between" in str(failure.value)
            assert relay.bytes_relayed < 1500  # at most our hello and the founder's refusal
            # The honest path: the same peer, straight to the founder.
            identity = await dial_data_plane(honest, address, mesh_id, secret, founder_key)
            assert identity.hello.node_key == founder_key
        finally:
            relay.stop()

    asyncio.run(attack())
    assert ed25519_key_in_certificate(crafted) == attacker.public_bytes  # a parser is not fooled


def test_a_dialler_whose_client_certificate_is_not_its_hello_key_is_refused(node_factory):
    """Mutual TLS: the acceptor pins the dialler's certificate key to the key in its hello."""
    founder = node_factory("--client")
    mesh_id, secret, founder_key, address = member_of(founder)
    attacker, claimed = NodeKey.generate(), NodeKey.generate()

    async def attack():
        link = await tls_transport(attacker).connect(address)
        hello = Hello(DIAL, mesh_id, claimed.public_bytes, os.urandom(32), "claimed", {}, None, "probe")
        await link.send(hello.to_wire())
        reply = await asyncio.wait_for(link.receive(), 5)
        link.close()
        return reply

    reply = asyncio.run(attack())
    assert reply["type"] == "refuse" and "someone is in between" in reply["reason"]
    assert asyncio.run(dial_data_plane(NodeKey.generate(), address, mesh_id, secret, founder_key))


def pem_private_keys_in(home) -> list[str]:
    found = []
    for folder, _, names in os.walk(home):
        for name in names:
            path = os.path.join(folder, name)
            if b"PRIVATE KEY" in open(path, "rb").read():
                found.append(os.path.relpath(path, home))
    return found


def test_the_private_key_is_never_written_to_disk_and_old_copies_are_deleted(node_factory, tmp_path):
    home = tmp_path / "home"
    (home / "tls").mkdir(parents=True)
    stale = NodeKey.generate().private_key_pem()
    (home / "tls" / "node.key").write_bytes(stale)  # what versions before this one left behind
    node = node_factory("--client", home=home)
    node.printed("Created mesh")
    mesh_id, secret, node_key, address = member_of(node)
    assert asyncio.run(dial_data_plane(NodeKey.generate(), address, mesh_id, secret, node_key))
    assert not (home / "tls" / "node.key").exists()
    assert pem_private_keys_in(home) == []
    raw = open_secret_store(home).get("node-key")
    holders = [os.path.relpath(os.path.join(folder, name), home) for folder, _, names in os.walk(home)
               for name in names if base64.b64encode(raw) in open(os.path.join(folder, name), "rb").read()]
    assert holders == ["secrets.json"] and (os.stat(home / "secrets.json").st_mode & 0o077) == 0


def test_a_resumed_or_joining_node_prints_no_invite(node_factory):
    founder = node_factory("--client")
    token = founder.invite_token()  # founding prints one
    joiner = node_factory("--client", "--join", token)
    joiner.printed("Joined mesh")
    home = founder.home
    founder.stop()
    resumed = node_factory("--client", home=home)
    resumed.printed("Resumed mesh")
    poll(lambda: joiner.node_id in resumed.peer_ids(), 15, message="the joiner to link again")
    for node in (joiner, resumed):
        assert "Invite token" not in "".join(node.output) and "meshdesk://join/" not in "".join(node.output)
    assert token not in (home / "logs" / "meshdesk.log").read_text()


def test_a_peer_name_with_control_characters_reaches_the_log_escaped(node_factory):
    founder = node_factory("--client")
    evil = "evil\nFORGED 2026-01-01 WARNING meshdesk: all is lost\x1b[2J\r"

    async def join():
        transport, identity = await join_named(founder.invite_token(), evil)
        await transport.stop()
        return identity

    asyncio.run(join())
    log_file = founder.home / "logs" / "meshdesk.log"
    poll(lambda: "linked with evil" in log_file.read_text(), 10, message="the link to be logged")
    text = log_file.read_text()
    assert not any(line.startswith("FORGED") for line in text.splitlines())
    assert "\x1b" not in text and "\r" not in text


async def join_named(token_text: str, name: str):
    token = decode_token(token_text)
    key = NodeKey.generate()
    transport = quic_transport(key)
    link = await transport.connect(tuple(token.addresses[0]))
    identity = await handshake.dial(link, credentials(key, name), token.mesh_id, None, invite=token_text,
                                    expected_node_key=token.inviter_key)
    return transport, identity


def test_refusals_reach_the_views_but_never_make_the_node_replan(tmp_path):
    """Strangers knocking on both planes of a real MeshService are refused; its node's views
    hear of each refusal, its serving never re-plans, and a member still links."""
    from meshdesk.adapters.secret_store import FileSecrets
    from meshdesk.app.mesh_setup import build_mesh
    from tests.test_node import FakeServing, make_node

    async def knock():
        key, secrets = NodeKey.generate(), FileSecrets(tmp_path)
        node_id = node_id_for(key.public_bytes)
        record = {"name": "n", "capacity_bytes": 0, "models": (), "serving": None, "role": "client",
                  "versions": {"protocol": 1}}
        mesh = build_mesh(tmp_path, key, node_id, "n", secrets, "127.0.0.1", 0, lambda: dict(record))
        node, _, serving, _, _, notified = make_node(mesh=mesh, serving=FakeServing())
        port = await mesh.bind()
        mesh.load_or_create_mesh()
        running = asyncio.ensure_future(mesh.run())
        try:
            stranger = NodeKey.generate()
            for purpose, transport in (("control", quic_transport(stranger)), ("api", tls_transport(stranger))):
                with pytest.raises(HandshakeFailed):
                    await connect_and_authenticate(transport, ("127.0.0.1", port), credentials(stranger),
                                                   Dial(mesh.mesh_id, os.urandom(32), purpose=purpose), 5)
                await transport.stop()
            await wait_for(lambda: len(mesh.refusals) == 2)
            assert serving.replans == 0 and len(notified) >= 2
            member = NodeKey.generate()
            dial = Dial(mesh.mesh_id, mesh.mesh_secret, purpose="api", expected_node_key=key.public_bytes)
            link, identity = await connect_and_authenticate(tls_transport(member), ("127.0.0.1", port),
                                                            credentials(member), dial, 5)
            assert identity.hello.node_key == key.public_bytes
            link.close()
        finally:
            running.cancel()
            await mesh.leave()

    asyncio.run(knock())


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_the_log_file_rotates_and_keeps_a_bounded_number_of_old_files(tmp_path):
    import logging

    from meshdesk.app.home import Home, configure_logging

    home = Home(tmp_path)
    home.prepare()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(home, max_bytes=2000, backups=2)
        for number in range(200):
            logging.getLogger("meshdesk.test").info("line %d %s", number, "x" * 40)
        logging.getLogger("meshdesk.test").warning("from a peer: %s", "a\nFORGED line\x1b[2J")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    files = sorted(path.name for path in home.logs.iterdir())
    assert files == ["meshdesk.log", "meshdesk.log.1", "meshdesk.log.2"]
    assert all((home.logs / name).stat().st_size <= 2000 for name in files)
    last = (home.logs / "meshdesk.log").read_text()
    assert "line 199 " in last and "from a peer: a\\nFORGED line\\x1b[2J" in last
    assert not any(line.startswith("FORGED") for line in last.splitlines())


def test_without_memfd_the_key_file_is_gone_once_loaded(monkeypatch, tmp_path):
    """Where there is no memfd (macOS, Windows): a 0700 folder of its own, removed at once."""
    import tempfile

    folders = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(**options):
        folders.append(real_mkdtemp(dir=tmp_path, **options))
        assert os.stat(folders[-1]).st_mode & 0o077 == 0
        return folders[-1]

    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    key = NodeKey.generate()
    load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), key.certificate_pem("n"), key.private_key_pem())
    assert len(folders) == 1 and list(tmp_path.iterdir()) == []
