"""The mesh's live control links: who each one leads to, and an outbox per link.

Peer control (sans-IO) names links by number; this table maps the numbers to real links.
Each link gets an outbox drained by its own writer task, so a slow peer delays only itself
and the loop that carries out the machine's outputs never waits on a socket.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from meshdesk.node.handshake import PeerIdentity
from meshdesk.node.interfaces import LinkClosed, MessageLink

log = logging.getLogger(__name__)

_CLOSED = object()  # put in an outbox: the writer stops


class LinkTable:
    def __init__(self):
        self._numbers = itertools.count(1)
        self._links: dict[int, MessageLink] = {}
        self._identities: dict[int, PeerIdentity] = {}
        self._outboxes: dict[int, asyncio.Queue] = {}

    def add(self, identity: PeerIdentity, link: MessageLink) -> int:
        number = next(self._numbers)
        self._links[number] = link
        self._identities[number] = identity
        self._outboxes[number] = asyncio.Queue()
        return number

    def peer_id(self, number: int) -> str | None:
        identity = self._identities.get(number)
        return None if identity is None else identity.node_id

    def link(self, number: int) -> MessageLink | None:
        return self._links.get(number)

    def count(self) -> int:
        return len(self._links)

    def send(self, number: int, message: dict) -> None:
        outbox = self._outboxes.get(number)
        if outbox is not None:
            outbox.put_nowait(message)

    def close(self, number: int, reason: str) -> None:
        link = self._links.get(number)
        if link is not None:
            link.close(reason)
        self.send(number, _CLOSED)

    def remove(self, number: int) -> None:
        """The link has ended: forget it, and let its writer stop."""
        self.send(number, _CLOSED)
        self._links.pop(number, None)
        self._identities.pop(number, None)
        self._outboxes.pop(number, None)

    def close_all(self, reason: str) -> None:
        for number in list(self._links):
            self.close(number, reason)

    async def write_until_closed(self, number: int) -> None:
        link, outbox = self._links.get(number), self._outboxes.get(number)
        if link is None:
            return
        while (message := await outbox.get()) is not _CLOSED:
            try:
                await link.send(message)
            except (LinkClosed, ConnectionError):
                link.close()
                return

    async def send_now(self, sends, timeout: float) -> None:
        """Sends `SendMessage`s directly (when leaving, after the writers have stopped)."""
        async def send(output) -> None:
            link = self._links.get(output.link)
            if link is not None:
                try:
                    await link.send(output.message)
                except (LinkClosed, ConnectionError):
                    link.close()
        if sends:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*map(send, sends), return_exceptions=True)
            except TimeoutError:
                log.info("not every peer heard that we are leaving")
            await asyncio.sleep(0.05)  # let QUIC put the datagrams on the wire before closing
