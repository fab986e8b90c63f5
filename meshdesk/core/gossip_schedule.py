"""When a node gossips next, and to whom (`core.membership`): a round every `interval`, which
counts the node's own heartbeat up and makes every connected peer due, and sooner for peers
made due by news. All times are the caller's `now`."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshdesk.core.gossip_values import MAX_COUNTER


@dataclass
class GossipSchedule:
    interval: float
    heartbeat: int = 0  # this node's own count
    next_round: float | None = None  # set by the first event
    due_peers: set[str] = field(default_factory=set)
    due_at: float | None = None

    def observe(self, now: float) -> None:
        if self.next_round is None:
            self.next_round = now

    def make_due(self, now: float, peers: set[str]) -> None:
        if peers:
            self.due_peers |= peers
            self.due_at = now if self.due_at is None else min(self.due_at, now)

    def take_due(self, now: float, connected: set[str]) -> set[str]:
        """The peers due now, after starting a round if one is due; none are due afterwards."""
        self.observe(now)
        if now >= self.next_round:
            self.heartbeat = min(self.heartbeat + 1, MAX_COUNTER)
            on_schedule = self.next_round + self.interval
            self.next_round = on_schedule if on_schedule > now else now + self.interval
            self.make_due(now, connected)
        due, self.due_peers, self.due_at = self.due_peers, set(), None
        return due

    def deadlines(self) -> list[float]:
        return [time for time in (self.next_round, self.due_at) if time is not None]
