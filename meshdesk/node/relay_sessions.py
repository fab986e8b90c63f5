"""The relay's sessions (part of `node.relay_server.RelayServer`): one UDP port per source
that dials a registered node, claimed by the node with its token, forwarding both ways."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket

from meshdesk.core import relay_protocol as rp
from meshdesk.node.relay_parts import CLAIM_MOVE_SECONDS, UNANSWERED_SECONDS, Bucket, Endpoint, Registration, Session

log = logging.getLogger(__name__)


class RelaySessions:
    """Mixed into RelayServer, which holds `registrations`, `limits`, `ports`, `_total`."""

    def _from_source(self, registration: Registration, data: bytes, source: rp.Address) -> None:
        """A datagram to a node's listening port: into its session with `source`, made if new."""
        session = registration.sessions.get(source) or self._open_session(registration, source)
        if session is None:
            return
        now = asyncio.get_running_loop().time()
        if session.claimed is None or session.endpoint.transport is None:
            if len(session.pending) < self.limits.pending_datagrams:
                session.pending.append(data)
        elif session.towards_node.take(now, len(data)) and self._total.take(now, len(data)):
            self.forwarded_bytes += len(data)
            session.endpoint.transport.sendto(data, session.claimed)

    def _open_session(self, registration: Registration, source: rp.Address) -> Session | None:
        if sum(s.source[0] == source[0] for s in registration.sessions.values()) >= self.limits.sessions_per_source:
            return None
        if len(registration.sessions) >= self.limits.sessions_per_node or self.session_count() >= self.limits.sessions:
            oldest = registration.oldest_unanswered()  # a stranger's garbage makes room for a real dial
            if oldest is None:
                return None
            self._close_session(registration, oldest)
        sock = self._session_socket()
        if sock is None:
            return None
        now, rate = asyncio.get_running_loop().time(), self.limits.bytes_per_second
        endpoint = Endpoint(lambda data, sender: self._from_node(registration, session, data, sender))
        session = Session(sock.getsockname()[1], source, secrets.token_bytes(rp.TOKEN_BYTES), endpoint, now,
                          Bucket(rate, rate), Bucket(rate, rate), sock=sock)
        registration.sessions[source] = session
        asyncio.ensure_future(self._wrap(session))
        self._send(registration.writer, rp.session(session.port, session.token))
        log.info("relay: session at port %d for %s, from %s:%d", session.port, registration.node_id, *source)
        return session

    @staticmethod
    async def _wrap(session: Session) -> None:
        """The session's socket into its endpoint; closed at once if the session ended meanwhile."""
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: session.endpoint,
                                                                                 sock=session.sock)
        session.sock = None
        if session.closed:
            transport.close()

    def _from_node(self, registration: Registration, session: Session, data: bytes, sender: rp.Address) -> None:
        """A datagram to a session port: the node's claim, or its packet for the source."""
        now = asyncio.get_running_loop().time()
        token = rp.claimed_token(data)
        if token is not None:
            if secrets.compare_digest(token, session.token) and self._may_claim(session, sender, now):
                session.claimed, session.node_heard_at = sender, now
                self._flush(session, now)
            return
        if sender != session.claimed or registration.endpoint.transport is None:
            return  # not the node's end: nobody else may speak through its session
        session.node_heard_at, session.answered = now, True
        if session.towards_source.take(now, len(data)) and self._total.take(now, len(data)):
            self.forwarded_bytes += len(data)
            registration.endpoint.transport.sendto(data, session.source)

    @staticmethod
    def _may_claim(session: Session, sender: rp.Address, now: float) -> bool:
        """A first claim, the node's own again, or a new address once the old one went quiet
        (the node's router moved it); a claim replayed from elsewhere cannot take a live session."""
        return session.claimed in (None, sender) or now - session.node_heard_at >= CLAIM_MOVE_SECONDS

    def _flush(self, session: Session, now: float) -> None:
        if session.endpoint.transport is None:
            return  # the socket is being wrapped: the node's claims come again
        while session.pending:
            data = session.pending.popleft()
            if self._total.take(now, len(data)):
                self.forwarded_bytes += len(data)
                session.endpoint.transport.sendto(data, session.claimed)

    def _close_session(self, registration: Registration, session: Session) -> None:
        if registration.sessions.get(session.source) is session:
            del registration.sessions[session.source]
        session.closed = True
        if session.endpoint.transport is not None:
            session.endpoint.transport.close()

    async def _sweep(self) -> None:
        """Closes sessions their node stopped answering (it, or its source, is gone)."""
        while True:
            await asyncio.sleep(min(self.limits.session_idle_seconds, UNANSWERED_SECONDS) / 4)
            now = asyncio.get_running_loop().time()
            for registration in list(self.registrations.values()):
                for session in list(registration.sessions.values()):
                    if session.expired(now, self.limits.session_idle_seconds):
                        self._close_session(registration, session)

    def _session_socket(self) -> socket.socket | None:
        """A bound UDP socket for a session, at once (datagrams arrive before any await)."""
        for port in [0] if self.ports is None else [random.randint(*self.ports) for _ in range(16)]:
            sock = self._bound_socket(port)
            if sock is not None:
                return sock
        return None
