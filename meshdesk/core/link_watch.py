"""Direct evidence that a peer is gone: a control link on which nothing arrives (pure).

Both ends of every control link ping once per `PING_INTERVAL` and answer each other's pings,
so a link silent for `LINK_SILENT_SECONDS` has missed several of each. Peer control marks such
a peer unresponsive in its membership, where it dies once also unheard of through anyone's
relays for `core.heartbeats.UNRESPONSIVE_DEAD_AFTER`, well before `dead_after`, which is for
nodes we hold no link to. A node that is only slow (a loaded machine, a model loading in a
child process) keeps answering pings within a second and never gets there.

A link through a relay gets RELAYED_SILENT_SECONDS: its pings cross two more hops and a
server that may be far away or busy, and a relay-only peer declared dead for a slow relay
would be cut off for nothing (mesh-llm's PR #697 fixed that very complaint).

A stall of our own is no evidence: when this node's timer comes late (its loop did not run,
the machine was starved or suspended), silence is counted again from when it woke.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

LINK_SILENT_SECONDS = 3.0
RELAYED_SILENT_SECONDS = 10.0
OWN_STALL_SECONDS = 2.0  # timers come at least once per ping interval; a longer gap is a stall


class WatchedLink(Protocol):
    peer_id: str
    last_heard: float
    relayed: bool


def silence_allowed(link: WatchedLink) -> float:
    return RELAYED_SILENT_SECONDS if link.relayed else LINK_SILENT_SECONDS


class LinkWatch:
    def __init__(self, now: float):
        self._last_tick = now

    def silent_peers(self, now: float, links: Iterable[WatchedLink]) -> list[str]:
        """The peers whose links have been silent too long; call on every timer."""
        stalled = now - self._last_tick > OWN_STALL_SECONDS
        self._last_tick = max(self._last_tick, now)
        silent = []
        for link in links:
            if stalled:
                link.last_heard = max(link.last_heard, now)
            elif now - link.last_heard >= silence_allowed(link):
                silent.append(link.peer_id)
        return silent

    @staticmethod
    def deadlines(now: float, links: Iterable[WatchedLink]) -> list[float]:
        """When a link that still speaks would count as silent."""
        return [link.last_heard + silence_allowed(link) for link in links
                if link.last_heard + silence_allowed(link) > now]
