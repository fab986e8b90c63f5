"""Acting as a mesh peer from inside a test: keys, tokens and links to a real node."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from meshdesk.adapters.node_keys import NodeKey, public_issuer_pem, verify_signature
from meshdesk.adapters.quic.transport import QuicTransport
from meshdesk.adapters.secret_store import open_secret_store
from meshdesk.adapters.tls_transport import TlsTransport
from meshdesk.app.mesh_setup import load_node_key, node_versions
from meshdesk.core.identity import node_id_for
from meshdesk.core.invite import InviteToken
from meshdesk.node.handshake import Credentials
from meshdesk.node.interfaces import LinkClosed


def node_key_of(home: Path) -> NodeKey:
    """A node's own key, from its home (on this headless box, the 0600 file fallback)."""
    return load_node_key(open_secret_store(home))


def resigned(token: InviteToken, key: NodeKey, **changes) -> InviteToken:
    return dataclasses.replace(token, **changes).signed(key.sign)


def credentials(key: NodeKey, name: str = "test-peer") -> Credentials:
    return Credentials(key.public_bytes, key.sign, verify_signature, name, node_versions(), os.urandom)


def quic_transport(key: NodeKey) -> QuicTransport:
    return QuicTransport(key.certificate("test"), key.private_key, key.public_bytes)


def tls_transport(key: NodeKey, folder: Path | None = None) -> TlsTransport:
    """A data-plane transport with `key`'s certificate (held in memory; `folder` is unused)."""
    certificate = key.certificate_pem(node_id_for(key.public_bytes))
    return TlsTransport(certificate, key.private_key_pem(), key.public_bytes, public_issuer_pem())


async def record_messages(link, into: list) -> None:
    """Appends whatever arrives on `link` to `into` until it ends (a trap's listener)."""
    try:
        while True:
            into.append(await link.receive())
    except (LinkClosed, ConnectionError, ValueError):
        pass
