"""A node's registration at one relay (`core.relay_protocol`): kept up, renewed when lost, and
each session the relay opens for a new source claimed from the mesh port.

While registered, the node is reachable at its relayed address; a dial there is an ordinary
QUIC dial, so the mesh handshake pins both keys end to end and the relay reads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from meshdesk.core import relay_protocol as rp
from meshdesk.core.frames import FrameError, encode_frame
from meshdesk.node.relay_parts import FramedMessages

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
RETRY_FIRST, RETRY_MOST = 1.0, 30.0  # seconds between attempts after a loss, doubling
CLAIM_REPEATS = (0.0, 0.3, 1.0)      # a lost claim datagram only delays a session
MAX_SESSIONS_REMEMBERED = 256
MAX_CLAIMS_AT_ONCE = 64


class RelayRefused(Exception):
    """The relay said no (full, or too many registrations from our address)."""


class RelayClient:
    def __init__(self, relay: tuple[str, int], public_key: bytes, sign: Callable[[bytes], bytes],
                 send_datagram: Callable[[tuple[str, int], bytes], bool], on_change: Callable[[], None]):
        self.relay = relay               # as named: a host name or an IP literal, and the port
        self.public_key, self.sign = public_key, sign
        self.send_datagram = send_datagram  # from the mesh port (`QuicTransport.send_datagram`)
        self.on_change = on_change       # the relayed address came or went
        self.relay_ip: str | None = None
        self.relayed_address: tuple[str, int] | None = None
        self.sessions: dict[tuple[str, int], None] = {}  # our ends' addresses as sources see them
        self.registered = asyncio.Event()  # set once, at the first registration
        self.failures = 0  # attempts in a row that never registered
        self._claiming = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._keep_registered())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def is_session(self, address: tuple[str, int]) -> bool:
        """Whether a link from `address` came through this relay."""
        return tuple(address) in self.sessions

    async def _keep_registered(self) -> None:
        wait = RETRY_FIRST
        while True:
            try:
                await self._registered_until_lost()
            except RelayRefused as refusal:
                log.warning("the relay %s:%d refused us: %s", *self.relay, refusal)
            except (OSError, TimeoutError, FrameError, rp.RelayProtocolError) as error:
                log.info("the relay %s:%d is unreachable: %s", *self.relay, str(error) or type(error).__name__)
            except Exception as error:  # e.g. a name getaddrinfo cannot even encode: keep trying
                log.warning("the relay %s:%d failed: %r", *self.relay, error)
            if self.relayed_address is not None:  # we were registered: try again soon
                self.relayed_address, wait = None, RETRY_FIRST
                self.on_change()
            else:
                self.failures += 1
            await asyncio.sleep(wait)
            wait = min(RETRY_MOST, wait * 2)

    async def _registered_until_lost(self) -> None:
        self.relay_ip = await self._resolve()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(self.relay_ip, self.relay[1])
        messages = FramedMessages(reader)
        try:
            port = await self._register(messages, writer)
            self.relayed_address = (self.relay_ip, port)
            self.registered.set()
            self.failures = 0
            log.info("reachable through the relay %s:%d at %s:%d", *self.relay, *self.relayed_address)
            self.on_change()
            pinging = asyncio.ensure_future(self._ping(writer))
            try:
                await self._serve(messages)
            finally:
                pinging.cancel()
        finally:
            writer.close()

    async def _resolve(self) -> str:
        """An IPv4 literal for the relay: what the mesh port's claims and the record carry."""
        infos = await asyncio.get_running_loop().getaddrinfo(self.relay[0], self.relay[1], family=socket.AF_INET,
                                                             type=socket.SOCK_STREAM)
        return infos[0][4][0]

    async def _register(self, messages: FramedMessages, writer: asyncio.StreamWriter) -> int:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            nonce = rp.read_challenge(await messages.next())
            writer.write(encode_frame(rp.register(self.public_key, self.sign(rp.registration_bytes(nonce)))))
            reply = await messages.next()
        if reply.get("type") == "refused":
            raise RelayRefused(str(reply.get("reason"))[:200])
        if reply.get("type") != "registered":
            raise rp.RelayProtocolError(f"expected 'registered', got {str(reply.get('type'))[:40]!r}")
        return rp.port_field(reply)

    async def _serve(self, messages: FramedMessages) -> None:
        while True:
            async with asyncio.timeout(rp.CONTROL_IDLE_SECONDS):
                message = await messages.next()
            if message.get("type") == "session":
                self._claim(rp.port_field(message), rp.hex_field(message, "token", rp.TOKEN_BYTES))
            elif message.get("type") != "pong":
                raise rp.RelayProtocolError(f"an unexpected {str(message.get('type'))[:40]!r} message")

    @staticmethod
    async def _ping(writer: asyncio.StreamWriter) -> None:
        while not writer.is_closing():
            await asyncio.sleep(rp.CONTROL_PING_SECONDS)
            writer.write(encode_frame({"type": "ping"}))

    def _claim(self, port: int, token: bytes) -> None:
        address = (self.relay_ip, port)
        self.sessions[address] = None
        while len(self.sessions) > MAX_SESSIONS_REMEMBERED:
            del self.sessions[next(iter(self.sessions))]
        if self._claiming < MAX_CLAIMS_AT_ONCE:  # a relay sending notice after notice gets no more
            self._claiming += 1
            asyncio.ensure_future(self._send_claims(address, rp.claim_datagram(token)))

    async def _send_claims(self, address: tuple[str, int], claim: bytes) -> None:
        waited = 0.0
        try:
            for at in CLAIM_REPEATS:
                await asyncio.sleep(at - waited)
                waited = at
                if not self.send_datagram(address, claim):
                    log.info("cannot claim a relay session at %s:%d from the mesh port", *address)
                    return
        finally:
            self._claiming -= 1
