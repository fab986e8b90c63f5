"""Where peers see this node from (as STUN tells), and which of those addresses it may advertise.

Every authenticated control link carries, in the peer's handshake auth, the address the peer
sees our end of the link at (`core.handshake.Auth.observed`). Two kinds:

- INBOUND: the peer dialled us, so it names the address it reached our mesh port at. Behind a
  port forward or a one-to-one NAT (a cloud VM) that is an address we cannot know by ourselves,
  and one that works: the peer just came in through it.
- OUTBOUND: we dialled the peer, from the mesh port's own socket (`adapters.quic.transport`),
  so the peer names that socket's mapping: behind an endpoint-independent NAT, the address a
  hole punch aims at (`core.hole_punch`, where the rendezvous reads it off the link itself).
  The NAT lets in only what answers our own flows, so a dial from elsewhere would not get in:
  it is shown, never advertised.

A member can lie, so one report alone never makes us advertise anything: an INBOUND address
is advertised only while CONFIRMING_REPORTERS distinct members report the very same one. It
must be a unicast address (not loopback, link-local, multicast, unspecified or reserved) and
not one we advertise already; at most MAX_ADVERTISED are, after the local ones. A member keeps
one report, its latest; a report outlives its link by REPORT_LINGER_SECONDS (the peer may just
be reconnecting), and the table holds MAX_REPORTERS, the most recent.

Pure: time comes in as `now`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

Address = tuple[str, int]

CONFIRMING_REPORTERS = 2
MAX_ADVERTISED = 2
MAX_REPORTERS = 64
REPORT_LINGER_SECONDS = 120.0


class Direction(StrEnum):
    INBOUND = "inbound"    # the reporter dialled us
    OUTBOUND = "outbound"  # we dialled the reporter


@dataclass
class Report:
    address: Address
    direction: Direction
    at: float
    expires_at: float | None = None  # None while the reporter's link is up


@dataclass(frozen=True)
class Observed:
    """One address peers see us at, for the status: how many members say so, and whether we
    advertise it."""

    address: Address
    direction: Direction
    reporters: int
    advertised: bool

    def to_wire(self) -> dict:
        return {"address": list(self.address), "direction": self.direction.value,
                "reporters": self.reporters, "advertised": self.advertised}


def invite_addresses(own: list[Address], confirmed: list[Address], limit: int) -> list[Address]:
    """What an invite carries, at most `limit`: our outward address first (a friend on our LAN
    reaches us there, without a detour through the router), then the addresses members confirm
    they reach us at (a joiner out on the internet can reach only those), then our others."""
    ordered = [*own[:1], *confirmed, *own[1:]]
    return list(dict.fromkeys(ordered))[:limit]


def usable(address: Address) -> bool:
    """Whether an address could be ours as others see it: a unicast IP literal, a real port."""
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if not 1 <= port <= 65535:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified
                or ip.is_reserved)


class Reachability:
    """The reports of each member, and what they confirm."""

    def __init__(self, local_addresses: list[Address] = ()):
        self.local_addresses = {tuple(address) for address in local_addresses}
        self._reports: dict[str, Report] = {}

    def report(self, now: float, reporter: str, address: Address, direction: Direction) -> bool:
        """A member's word on where it sees us; False when ignored (unusable). Replaces that
        member's earlier report."""
        address = (str(address[0]), int(address[1]))
        if not usable(address):
            return False
        self._reports[reporter] = Report(address, direction, now)
        if len(self._reports) > MAX_REPORTERS:
            oldest = min(self._reports, key=lambda peer: self._reports[peer].at)
            del self._reports[oldest]
        return True

    def reporter_gone(self, now: float, reporter: str) -> None:
        """The member's link is down: its report lapses after the linger."""
        report = self._reports.get(reporter)
        if report is not None and report.expires_at is None:
            report.expires_at = now + REPORT_LINGER_SECONDS

    def reporter_back(self, reporter: str) -> None:
        """The member is linked again: its report holds until that link goes too."""
        report = self._reports.get(reporter)
        if report is not None:
            report.expires_at = None

    def advertised(self, now: float) -> list[Address]:
        """The confirmed INBOUND addresses we do not advertise already, best confirmed first."""
        return [entry.address for entry in self.observed(now) if entry.advertised]

    def observed(self, now: float) -> list[Observed]:
        """Every address reported and not lapsed, most reporters first."""
        counts: dict[tuple[Address, Direction], int] = {}
        for report in self._live(now):
            key = (report.address, report.direction)
            counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        entries, taken = [], 0
        for (address, direction), reporters in ranked:
            advertise = (direction is Direction.INBOUND and reporters >= CONFIRMING_REPORTERS
                         and address not in self.local_addresses and taken < MAX_ADVERTISED)
            taken += advertise
            entries.append(Observed(address, direction, reporters, advertise))
        return entries

    def _live(self, now: float) -> list[Report]:
        return [report for report in self._reports.values()
                if report.expires_at is None or now < report.expires_at]
