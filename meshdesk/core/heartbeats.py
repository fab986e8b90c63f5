"""The SWIM-style heartbeat table of `core.membership`: when each node was last heard of.

A node is "heard" when its heartbeat count or its record's generation goes up, whoever relays
it. Silent for `suspect_after` seconds it is suspect, for `dead_after` dead; a node that has
been silent `forget_after` seconds is forgotten. All times are the caller's `now`.

A node marked `unresponsive` (our direct link to it has gone silent: `core.link_watch`) is dead
sooner, once unheard of for `unresponsive_dead_after`: two kinds of evidence agree, its link
and everyone's relays. Hearing of it again, through anyone, clears the mark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from meshdesk.core.states import Liveness

FORGET_AFTER_DEAD_AFTER_TIMES = 10
UNRESPONSIVE_DEAD_AFTER = 3.5  # a killed peer is out of every view in about this long


@dataclass
class HeartbeatTable:
    suspect_after: float
    dead_after: float
    heartbeats: dict[str, int] = field(default_factory=dict)  # the highest count seen, by node
    last_heard: dict[str, float] = field(default_factory=dict)
    reported_dead: set[str] = field(default_factory=set)  # dead, and already returned by `expire`
    unresponsive: set[str] = field(default_factory=set)   # silent on our direct link to them
    unresponsive_after: float = UNRESPONSIVE_DEAD_AFTER

    @property
    def forget_after(self) -> float:
        return self.dead_after * FORGET_AFTER_DEAD_AFTER_TIMES

    @property
    def unresponsive_dead_after(self) -> float:
        return min(self.unresponsive_after, self.dead_after)

    def hear_from(self, now: float, node_id: str) -> None:
        self.last_heard[node_id] = now
        self.reported_dead.discard(node_id)
        self.unresponsive.discard(node_id)

    def count_heartbeat(self, now: float, node_id: str, count: int) -> None:
        if count > self.heartbeats.get(node_id, -1):
            self.heartbeats[node_id] = count
            self.hear_from(now, node_id)

    def heartbeat_of(self, node_id: str) -> int:
        return self.heartbeats.get(node_id, -1)

    def state(self, node_id: str, now: float) -> Liveness:
        """Alive, suspect or dead, for a node heard at least once."""
        heard = self.last_heard[node_id]  # compared as sums, exactly as `deadlines` computes them
        if now >= heard + self.dead_after:
            return Liveness.DEAD
        if node_id in self.unresponsive and now >= heard + self.unresponsive_dead_after:
            return Liveness.DEAD
        return Liveness.SUSPECT if now >= heard + self.suspect_after else Liveness.ALIVE

    def silent_for(self, node_id: str, now: float) -> float:
        return now - self.last_heard[node_id]

    def deadlines(self, may_still_die: Callable[[str], bool]) -> list[float]:
        """When a node may be forgotten, and when one that can still die will be dead."""
        found = []
        for node_id, heard in self.last_heard.items():
            found.append(heard + self.forget_after)
            if may_still_die(node_id):
                found.append(heard + self.dead_after)
                if node_id in self.unresponsive:
                    found.append(heard + self.unresponsive_dead_after)
        return found

    def long_silent(self, now: float) -> list[str]:
        return [node_id for node_id, heard in self.last_heard.items() if now >= heard + self.forget_after]

    def forget(self, node_id: str) -> None:
        self.heartbeats.pop(node_id, None)
        del self.last_heard[node_id]
        self.reported_dead.discard(node_id)
        self.unresponsive.discard(node_id)


class LinkEvidence:
    """Mixed into `core.membership.Membership`: what peer control saw on its own links."""

    _records: dict
    _heartbeats: HeartbeatTable

    def peer_unresponsive(self, now: float, peer_id: str) -> None:
        """Our direct link to `peer_id` has gone silent: unless heard of through anyone, it dies
        sooner (`core.link_watch`)."""
        if peer_id in self._records:
            self._heartbeats.unresponsive.add(peer_id)
