"""Hole punching, sans-IO: two members that cannot dial each other meet through a third.

A home router lets in only what answers a flow a machine inside started. Two members behind
such routers (endpoint-independent ones: a socket keeps one public address and port whatever
it sends to) can still link directly if each sends to the other's public address at about the
same moment: each one's packets open its own router for the other's. The addresses come from
a member both are linked to, the rendezvous, which sees where each link comes from (dials
leave from the mesh port's socket, so that is the port a punch must reach).

1. The asker, the lower id of a pair without a link (as peer control's dials go), picks a
   rendezvous among its links that the other member's record says it is linked to, and sends
   `{"type": "punch-ask", "to": <id>}`; again every ASK_INTERVAL while there is still no link,
   each time through the next such member (one that does not answer is not asked for ever).
2. The rendezvous, linked to both, sends each `{"type": "punch", "peer": <the other's id>,
   "address": [host, port]}`, the address it sees the other's link come from; at most once
   per pair every RENDEZVOUS_GAP seconds.
3. Each of the pair, told to punch towards a member it holds alive and has no link to, sends
   punch datagrams and dials that address expecting the member's key (`Punch`), at most once per
   rendezvous and member every PUNCH_GAP seconds (so a lying member's introductions cannot
   crowd out an honest one's). Both dial: whichever link is made first carries the mesh, and
   if both are, peer control keeps the one the lower id dialled.

Between symmetric NATs (a new public port for every destination) the addresses the rendezvous
saw are not the ones the pair's packets come from, so the punch fails; that is what relays are
for. A pair linked only through a relay goes on asking, every UPGRADE_ASK_INTERVAL, since a
router can change (or the relay be far away), and a punched link replaces the relayed one. A
link through a relay says nothing of where its peer is, so no introduction uses one. A lying rendezvous can only send us dialling at an address that must answer with the
member's key, so it learns nothing and admits nobody; the gaps keep it from making us a
packet cannon.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshdesk.core.errors import PeerProtocolError
from meshdesk.core.link_book import LinkBook, LinkState

Address = tuple[str, int]

ASK_AFTER_SECONDS = 2.0   # a direct dial gets this long first
ASK_INTERVAL = 10.0       # asks again while there is still no link
UPGRADE_ASK_INTERVAL = 30.0  # asks again while the link goes through a relay
RENDEZVOUS_GAP = 2.0      # a pair is introduced at most this often
PUNCH_GAP = 5.0           # we punch towards one member at most this often
MAX_NODE_ID_CHARS = 64
MESSAGE_TYPES = ("punch-ask", "punch")


@dataclass(frozen=True)
class Punch:
    """Punch towards `peer_id` at `address` (datagrams, then a dial expecting its key)."""

    peer_id: str
    address: Address


def ask_message(target: str) -> dict:
    return {"type": "punch-ask", "to": target}


def introduction(peer_id: str, address: Address) -> dict:
    return {"type": "punch", "peer": peer_id, "address": [address[0], address[1]]}


def node_id_field(message: dict, name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NODE_ID_CHARS:
        raise PeerProtocolError(f"a {message.get('type')} message without a node id in {name!r}")
    return value


def address_field(message: dict) -> Address:
    """An IP literal and a port; anything else is the sender's fault."""
    value = message.get("address")
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and type(value[1]) is int and 0 < value[1] < 65536):
        raise PeerProtocolError("a punch message without an address [host, port]")
    try:
        ip = ipaddress.ip_address(value[0])
    except ValueError:
        raise PeerProtocolError("a punch message whose host is not an IP address") from None
    if ip.is_multicast or ip.is_unspecified:
        raise PeerProtocolError("a punch message towards an address no member can have")
    return value[0], value[1]


class HolePunching:
    """The three roles: when to ask, whom to introduce, when to punch. Messages out are
    (link, message) pairs for peer control to send."""

    def __init__(self):
        self._missing_since: dict[str, float] = {}  # members we lack a link to, as asker
        self._asked_at: dict[str, float] = {}
        self._introduced_at: dict[frozenset, float] = {}
        self._punched_at: dict[tuple[str, str], float] = {}  # (rendezvous, member)
        self._asks_made = 0

    def received(self, now: float, sender: LinkState, message: dict, book: LinkBook,
                 alive: set[str]) -> list[Punch | tuple[int, dict]]:
        """A punch-ask (we are the rendezvous) or a punch (we are one of the pair); `alive`:
        the members we hold alive, but us."""
        if message["type"] == "punch-ask":
            return self._introduce(now, sender, book.to(node_id_field(message, "to")))
        peer_id, address = node_id_field(message, "peer"), address_field(message)
        if peer_id not in alive or book.linked_directly(peer_id):  # us, a stranger, or linked already
            return []
        return self._punch(now, sender.peer_id, peer_id, address)

    def asks(self, now: float, own_id: str, records, book: LinkBook) -> list[tuple[int, dict]]:
        """As asker: the members we should dial (the lower id dials) and have no direct link to,
        each through a member its record says it is linked to and we are linked to directly; a
        direct dial gets ASK_AFTER_SECONDS first, and an ask is repeated every ASK_INTERVAL
        (UPGRADE_ASK_INTERVAL while a relay links us)."""
        missing = {record.node_id: self._rendezvous([peer for peer in sorted(record.rtt_ms)
                                                     if book.linked_directly(peer)])
                   for record in records if own_id < record.node_id and not book.linked_directly(record.node_id)}
        self._missing_since = {peer: self._missing_since.get(peer, now) for peer in missing}
        due = []
        for target, via in sorted(missing.items()):
            if via is None or now - self._missing_since[target] < ASK_AFTER_SECONDS:
                continue
            interval = UPGRADE_ASK_INTERVAL if target in book.by_peer else ASK_INTERVAL
            if now - self._asked_at.get(target, -interval) >= interval:
                self._asked_at[target] = now
                self._asks_made += 1
                due.append((book.by_peer[via], ask_message(target)))
        return due

    def _rendezvous(self, candidates: list[str]) -> str | None:
        """The members that could introduce us, taken in turn from one ask to the next."""
        return candidates[self._asks_made % len(candidates)] if candidates else None

    def _introduce(self, now: float, asker: LinkState, target: LinkState | None) -> list[tuple[int, dict]]:
        """Each of the pair hears where we see the other's link come from, once per gap."""
        if target is None or asker.address is None or target.address is None or asker.peer_id == target.peer_id \
                or asker.relayed or target.relayed:
            return []
        pair = frozenset((asker.peer_id, target.peer_id))
        if now - self._introduced_at.get(pair, -RENDEZVOUS_GAP) < RENDEZVOUS_GAP:
            return []
        self._introduced_at = {key: at for key, at in self._introduced_at.items() if now - at < RENDEZVOUS_GAP}
        self._introduced_at[pair] = now
        return [(target.link, introduction(asker.peer_id, asker.address)),
                (asker.link, introduction(target.peer_id, target.address))]

    def _punch(self, now: float, rendezvous: str, peer_id: str, address: Address) -> list[Punch]:
        """Taken at most once per rendezvous and member every PUNCH_GAP."""
        key = (rendezvous, peer_id)
        if now - self._punched_at.get(key, -PUNCH_GAP) < PUNCH_GAP:
            return []
        self._punched_at = {pair: at for pair, at in self._punched_at.items() if now - at < PUNCH_GAP}
        self._punched_at[key] = now
        return [Punch(peer_id, address)]
