"""Making an authenticated link, from either end, written once for both planes.

`connect_and_authenticate` dials an address and runs the mesh handshake as dialler;
`accept_and_authenticate` runs it as acceptor on a link a transport accepted. Both close the
link on failure, so a caller holds a link only once the peer has proved who it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from meshdesk.core.errors import PeerProtocolError
from meshdesk.node import handshake
from meshdesk.node.handshake import Admission, Credentials, PeerIdentity
from meshdesk.node.interfaces import LinkClosed, MessageLink

log = logging.getLogger(__name__)

REFUSAL_LINGER_SECONDS = 1.0  # the dialler hangs up once it has read our refusal


class Unreachable(Exception):
    """No connection could be made to the address (the network said no, or nothing answered)."""


class HandshakeFailed(Exception):
    """The connection was made but the handshake did not finish; `cause` says why."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class Dial:
    """What a dial proves and asks for: the mesh, and optionally a key or an invite."""

    mesh_id: str
    mesh_secret: bytes | None
    purpose: str = "control"
    invite: str | None = None
    expected_node_key: bytes | None = None


async def connect_and_authenticate(transport, address: tuple[str, int], credentials: Credentials,
                                   dial: Dial, timeout: float) -> tuple[MessageLink, PeerIdentity]:
    """Raises Unreachable, or HandshakeFailed (its `cause` a PeerProtocolError when the peer
    broke the protocol or refused us, else a lost link or a timeout)."""
    try:
        link = await transport.connect(tuple(address), timeout)
    except (OSError, asyncio.TimeoutError, ConnectionError) as error:
        raise Unreachable(f"{address[0]}:{address[1]}: {str(error) or type(error).__name__}") from None
    try:
        identity = await handshake.dial(link, credentials, dial.mesh_id, dial.mesh_secret,
                                        invite=dial.invite, purpose=dial.purpose,
                                        expected_node_key=dial.expected_node_key)
    except (PeerProtocolError, LinkClosed, ConnectionError, TimeoutError) as error:
        link.close("handshake failed")
        raise HandshakeFailed(error) from None
    return link, identity


async def accept_and_authenticate(link: MessageLink, credentials: Credentials, mesh_id: str,
                                  mesh_secret: bytes, admit: Admission,
                                  on_failure: Callable[[Exception], None] | None = None) -> PeerIdentity:
    """Raises PeerProtocolError or TimeoutError after closing the link; lost links propagate.
    `on_failure` hears of the error at once, before the refusal is given time to arrive."""
    try:
        return await handshake.accept(link, credentials, mesh_id, mesh_secret, admit)
    except (PeerProtocolError, TimeoutError) as error:
        if on_failure is not None:
            on_failure(error)
        await close_after_refusal(link)
        raise


async def close_after_refusal(link: MessageLink) -> None:
    """Gives a refusal time to arrive before the link goes."""
    try:
        await asyncio.wait_for(link.receive(), REFUSAL_LINGER_SECONDS)
    except (LinkClosed, PeerProtocolError, ConnectionError, asyncio.TimeoutError):
        pass
    link.close("refused")
