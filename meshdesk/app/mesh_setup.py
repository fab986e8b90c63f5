"""Wiring the mesh: the node key, the transports and what this node tells the mesh.

The private key lives in the secret store and in memory only: the TLS data plane loads it from
memory (adapters/tls_transport.py `load_chain`). Older versions wrote HOME/tls/node.key at every
start; `remove_stale_tls_files` deletes it.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
from pathlib import Path

from meshdesk import __version__
from meshdesk.adapters.node_keys import NodeKey, public_issuer_pem, verify_signature
from meshdesk.adapters.quic.transport import QuicTransport
from meshdesk.adapters.tls_transport import TlsTransport
from meshdesk.core.handshake import PROTOCOL_VERSION
from meshdesk.core.invite import MAX_ADDRESSES
from meshdesk.node.handshake import Credentials
from meshdesk.node.interfaces import SecretStore
from meshdesk.node.mesh import MeshService, MeshSettings

NODE_KEY = "node-key"
GIB = 1024 ** 3
SYSTEM_RESERVE_BYTES = 2 * GIB


def load_node_key(secrets: SecretStore) -> NodeKey:
    stored = secrets.get(NODE_KEY)
    if stored is not None:
        try:
            return NodeKey.from_private_bytes(stored)
        except ValueError:
            raise OSError(f"the stored node key is damaged ({len(stored)} bytes, not 32); "
                          f"secrets: {secrets.backend}") from None
    key = NodeKey.generate()
    secrets.set(NODE_KEY, key.private_bytes())
    return key


STALE_TLS_FILES = ("node.key", "node.crt")  # written by versions before 10, under HOME/tls


def remove_stale_tls_files(home: Path) -> None:
    folder = home / "tls"
    for name in STALE_TLS_FILES:
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass  # absent, or holding something that is not ours


def outward_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
        except OSError:
            return None


def interface_addresses() -> list[str]:
    """The IPv4 address of each interface that is up, loopback aside (Linux; elsewhere none)."""
    try:
        import fcntl
        import struct
        names = [name for _, name in socket.if_nameindex()]
    except (ImportError, OSError, AttributeError):
        return []
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack("H", fcntl.ioctl(probe.fileno(), 0x8913, request)[16:18])[0]  # SIOCGIFFLAGS
                if flags & 0x1 and not flags & 0x8:  # IFF_UP, not IFF_LOOPBACK
                    found.append(socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x8915, request)[20:24]))  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address
    return found


def advertise_hosts(bind_host: str) -> list[str]:
    """The outward address first, then the other interfaces' (a LAN beside a VPN: friends may
    reach only one of them; peers dial them in turn), then loopback."""
    if bind_host not in ("0.0.0.0", "::", ""):
        return [bind_host]
    found = (outward_address(), *interface_addresses())
    hosts = dict.fromkeys(host for host in found if host and host != "127.0.0.1")
    return [*list(hosts)[:MAX_ADDRESSES - 1], "127.0.0.1"]  # an invite carries at most MAX_ADDRESSES


def node_versions() -> dict:
    try:
        rpc = f"llama.cpp rpc via llama-cpp-python {importlib.metadata.version('llama-cpp-python')}"
    except importlib.metadata.PackageNotFoundError:
        rpc = None
    return {"app": __version__, "protocol": PROTOCOL_VERSION, "rpc": rpc}


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * GIB  # Windows: refined by the capacity work of the split runtime


def capacity_bytes(max_gb: float | None) -> int:
    usable = max(0, physical_memory_bytes() - SYSTEM_RESERVE_BYTES)
    return usable if max_gb is None else min(usable, int(max_gb * GIB))


def credentials_for(key: NodeKey, name: str) -> Credentials:
    return Credentials(public_key=key.public_bytes, sign=key.sign, verify=verify_signature,
                       name=name, versions=node_versions(), random_bytes=os.urandom)


def build_mesh(home: Path, key: NodeKey, node_id: str, name: str, secrets: SecretStore,
               bind_host: str, bind_port: int, own_record, relays=(), serve_relay_port: int | None = None) -> MeshService:
    remove_stale_tls_files(home)
    control = QuicTransport(key.certificate(node_id), key.private_key, key.public_bytes)
    data = TlsTransport(key.certificate_pem(node_id), key.private_key_pem(), key.public_bytes,
                        public_issuer_pem())
    settings = MeshSettings(home=home, bind_host=bind_host, bind_port=bind_port,
                            advertise_hosts=advertise_hosts(bind_host), relays=list(relays),
                            serve_relay_port=serve_relay_port)
    return MeshService(settings, credentials_for(key, name), secrets, control, data, own_record)
