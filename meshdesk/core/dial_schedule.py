"""When to dial whom: retry waits per member (or per address, for one remembered without its
owner), one dial at a time to each address, a member's addresses in turn, its relayed ones
last; and, now and then, the direct addresses of members linked only through a relay, whose
link a direct one replaces (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

DIAL_RETRY_SECONDS = 2.0
UPGRADE_DIAL_SECONDS = 30.0  # a member linked through a relay: its direct addresses again

Address = tuple[str, int]


@dataclass(frozen=True)
class DialAddress:
    address: Address
    node_id: str | None  # None: an address remembered from before, owner unknown


class DialSchedule:
    """Targets come from peer control each time; this remembers only what was dialled when."""

    def __init__(self, own_addresses: list[Address] = (), retry_seconds: float = DIAL_RETRY_SECONDS):
        self.retry_seconds = retry_seconds
        self.own_addresses = {tuple(address) for address in own_addresses}
        self.fallback_addresses: list[Address] = []  # where members were last seen
        self._last_dial: dict[Address | str, float] = {}  # by address, and by member id
        self._dialling: set[Address] = set()

    def due(self, now: float, targets: list[tuple[Address, str | None]]) -> list[DialAddress]:
        dials = []
        for address, node_id in targets:
            if address not in self._dialling and now >= self._retry_at(address, node_id):
                self._last_dial[address] = self._last_dial[node_id or address] = now
                self._dialling.add(address)
                dials.append(DialAddress(address, node_id))
        return dials

    def next_deadline(self, targets: list[tuple[Address, str | None]]) -> float | None:
        return min((self._retry_at(address, node_id) for address, node_id in targets
                    if address not in self._dialling), default=None)

    def pick(self, addresses) -> Address | None:
        """Which of one member's addresses to dial: none while one is being dialled, else the one
        dialled longest ago, the first never dialled in the member's own order."""
        addresses = [tuple(address) for address in addresses]
        if not addresses or any(address in self._dialling for address in addresses):
            return None
        return min(addresses, key=lambda address: self._last_dial.get(address, -math.inf))

    def ended(self, address: Address) -> None:
        self._dialling.discard(tuple(address))

    def _retry_at(self, address: Address, node_id: str | None) -> float:
        return self._last_dial.get(node_id or address, -self.retry_seconds) + self.retry_seconds


def dial_targets(own_id: str, records, linked: dict, dials: DialSchedule) -> list[tuple[Address, str | None]]:
    """Members we hold alive and lack a link to, when we have the lower id (their addresses
    in turn, relayed ones last: some may be unreachable from here); while alone, where members
    were last seen."""
    targets: list[tuple[Address, str | None]] = []
    for record in records:
        if own_id < record.node_id and record.node_id not in linked \
                and (address := dials.pick([*record.addresses, *record.relayed_addresses])) is not None:
            targets.append((address, record.node_id))
    if not linked:
        targets += [(address, None) for address in dials.fallback_addresses if address not in dials.own_addresses]
    return targets


class MeshDials:
    """The dials peer control makes: `first` to members without a link, `upgrades` to the
    direct addresses of members linked only through a relay (`relayed`: their ids)."""

    def __init__(self, own_addresses: list[Address] = ()):
        self.first = DialSchedule(own_addresses)
        self.upgrades = DialSchedule(own_addresses, UPGRADE_DIAL_SECONDS)

    def set_fallback_addresses(self, addresses: list[Address]) -> None:
        self.first.fallback_addresses = [tuple(address) for address in addresses]

    def due(self, now: float, own_id: str, records, linked: dict, relayed: set[str]) -> list[DialAddress]:
        return self.first.due(now, dial_targets(own_id, records, linked, self.first)) \
            + self.upgrades.due(now, self._upgrade_targets(own_id, records, relayed))

    def next_deadline(self, own_id: str, records, linked: dict, relayed: set[str]) -> float | None:
        deadlines = [self.first.next_deadline(dial_targets(own_id, records, linked, self.first)),
                     self.upgrades.next_deadline(self._upgrade_targets(own_id, records, relayed))]
        return min((deadline for deadline in deadlines if deadline is not None), default=None)

    def ended(self, address: Address) -> None:
        self.first.ended(address)
        self.upgrades.ended(address)

    def _upgrade_targets(self, own_id: str, records, relayed: set[str]) -> list[tuple[Address, str]]:
        return [(address, record.node_id) for record in records
                if own_id < record.node_id and record.node_id in relayed
                and (address := self.upgrades.pick(record.addresses)) is not None]
