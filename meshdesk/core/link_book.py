"""A peer controller's live control links: their state, round trips, and the one kept per peer
(pure; `core.peer_control` drives them)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# A link's RTT is the least of its last RTT_WINDOW samples, once it has RTT_SAMPLES_NEEDED: a
# stalled event loop (a model loading on a busy machine) only ever lengthens a sample, and one
# long sample used to push a LAN member past the planner's 80 ms for the ~10 s a moving average
# took to forget it, re-planning (restarting the model host) twice. A short window, so that a
# link that really got slower shows it within RTT_WINDOW pings.
RTT_WINDOW = 5
RTT_SAMPLES_NEEDED = 3


@dataclass
class LinkState:
    link: int
    peer_id: str
    dialled_by_us: bool
    last_heard: float = 0.0        # when anything last arrived on this link
    close_at: float | None = None  # set once the peer has been told it was removed
    address: tuple[str, int] | None = None  # where the peer's end is, as the transport sees it
    relayed: bool = False  # through a relay (`address` is then the relay's, not the peer's)
    rtt_samples: deque = field(default_factory=lambda: deque(maxlen=RTT_WINDOW))

    @property
    def rtt_ms(self) -> float | None:
        """The link's round trip (see RTT_WINDOW), None until enough pongs came back."""
        return min(self.rtt_samples) if len(self.rtt_samples) >= RTT_SAMPLES_NEEDED else None

    def measure_rtt(self, now: float, sent_at: object) -> None:
        """A pong echoes the time its ping was sent; anything else in it is ignored."""
        if isinstance(sent_at, (int, float)) and not isinstance(sent_at, bool) and sent_at <= now:
            self.rtt_samples.append((now - sent_at) * 1000)


class LinkBook:
    """The live links by number, and the one link kept per peer."""

    def __init__(self):
        self.states: dict[int, LinkState] = {}
        self.by_peer: dict[str, int] = {}

    def add(self, state: LinkState) -> None:
        self.states[state.link] = state
        self.by_peer[state.peer_id] = state.link

    def forget(self, link: int) -> LinkState:
        state = self.states.pop(link)
        if self.by_peer.get(state.peer_id) == link:
            del self.by_peer[state.peer_id]
        return state

    def to(self, peer_id: str) -> LinkState | None:
        link = self.by_peer.get(peer_id)
        return None if link is None else self.states[link]

    def relayed_peers(self) -> set[str]:
        """The peers linked only through a relay."""
        return {peer_id for peer_id, link in self.by_peer.items() if self.states[link].relayed}

    def linked_directly(self, peer_id: str) -> bool:
        state = self.to(peer_id)
        return state is not None and not state.relayed

    def rtt_table(self) -> dict[str, float]:
        return {peer_id: round(self.states[link].rtt_ms, 2) for peer_id, link in self.by_peer.items()
                if self.states[link].rtt_ms is not None}
