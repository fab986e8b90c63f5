"""How many connections may wait, unauthenticated, at once: per source address and in total.

A transport asks `enter(address)` for each new connection before doing any work for it (no
TLS handshake, no buffers) and drops the connection when it gets None; the ticket is released
when the peer has authenticated or the connection has ended, whichever comes first.
"""

from __future__ import annotations

PER_ADDRESS = 8
TOTAL = 64
PRE_AUTH_SECONDS = 5.0       # from the first packet to a finished mesh handshake, TLS included
PRE_AUTH_FRAME_BYTES = 16384  # the largest frame an unauthenticated peer may make us buffer


class Ticket:
    """One waiting connection's place; `release()` may be called any number of times."""

    def __init__(self, gate: "PreAuthGate", address: str):
        self.gate, self.address = gate, address
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._leave(self.address)


class PreAuthGate:
    def __init__(self, per_address: int = PER_ADDRESS, total: int = TOTAL):
        self.per_address, self.total = per_address, total
        self.waiting: dict[str, int] = {}

    @property
    def count(self) -> int:
        return sum(self.waiting.values())

    def has_room(self, address: str) -> bool:
        return self.count < self.total and self.waiting.get(address, 0) < self.per_address

    def enter(self, address: str) -> Ticket | None:
        if not self.has_room(address):
            return None
        self.waiting[address] = self.waiting.get(address, 0) + 1
        return Ticket(self, address)

    def _leave(self, address: str) -> None:
        left = self.waiting.get(address, 0) - 1
        if left > 0:
            self.waiting[address] = left
        else:
            self.waiting.pop(address, None)
