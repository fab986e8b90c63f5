"""When to propose prompt-lookup tokens, and how many: backing off while they are rejected.

A verification pass that carries k proposals computes k + 1 positions (on one CPU thread a
5-position pass took 2.7x a 1-token one, Gemma 3 270M and SmolLM2 alike), so proposals that
are rejected make every pass slower than a plain one; on a remote split only accepted ones save
a round trip. On prose, lookups are mostly
wrong; on edits and refactors, long runs are right. So:

- length: a pass whose proposals were all accepted doubles the next proposal (up to `longest`);
  one that was cut short proposes what it accepted plus one next time, but never fewer than
  `shortest` where that pays (below): a lookup that was wrong once is often right at the next
  match, and over a link a pass costs one round trip whatever it carries.
- what pays: on a CPU a pass's time grows with its width; `row_cost` is one more position's
  time as a share of a one-token pass (the model host measures it at load: 0.4-0.45 for Gemma 3
  270M and SmolLM2 135M on one thread, less over a slow link, where the round trip dominates).
  k proposals of which a are accepted save a passes and cost k * row_cost of one, so they pay
  while the acceptance a / k is above `row_cost`: that is the back-off's threshold (never below
  `threshold`). And the k-th proposal of a run accepted with probability p each is worth p^k
  against its cost, so a proposal is no longer than log(row_cost) / log(p), p the window's
  acceptance (which caps the length rule above, `shortest` included).
- back-off: once the last `window` passes with proposals accepted under that threshold of what they
  proposed, no proposals for a cool-down of `first_cool_down` generated tokens. Then one probe
  pass: if it accepts nothing, the next cool-down is twice as long (up to `longest_cool_down`);
  it starts again at `first_cool_down` once a whole window is above the threshold.

Measured (bench/speculative.py's prompts replayed offline, SmolLM2): answers that chat a
paragraph before the code they copy lost most of their gain to a stricter back-off (threshold
0.25, cool-downs up to 512 tokens), so the cool-down is short; with free width a shortest
proposal of 4 beat shrinking to 1 on every prompt; 1-token n-grams proposed worse than 2.

Pure and counted in tokens, not time (the row cost is measured once, by the model host, and a
seeded request gets a fixed one instead, `SEEDED_ROW_COST`, so its batch shapes never depend on
timing): the host feeds it each pass's outcome.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

LONGEST_PROPOSAL = 8
SHORTEST_PROPOSAL = 4
WINDOW = 4
THRESHOLD = 0.1        # the least acceptance that keeps proposals coming, however cheap
ROW_COST = 0.0         # unmeasured: width taken as free (a link's round trip dominates)
# A seeded request must give the same answer on every host process and replica, so its policy
# uses no measurement: this is about what one CPU thread measures here (0.38-0.47).
SEEDED_ROW_COST = 0.4
FIRST_COOL_DOWN = 16
LONGEST_COOL_DOWN = 32


@dataclass
class SpeculationPolicy:
    longest: int = LONGEST_PROPOSAL
    shortest: int = SHORTEST_PROPOSAL  # capped by `longest`, and by what pays (see above)
    row_cost: float = ROW_COST
    window: int = WINDOW
    threshold: float = THRESHOLD
    first_cool_down: int = FIRST_COOL_DOWN
    longest_cool_down: int = LONGEST_COOL_DOWN
    length: int = 0              # the next proposal's length (0: the shortest)
    cool_down_left: int = 0      # tokens still to generate without proposals
    next_cool_down: int = 0      # the next back-off's length (0: first_cool_down)
    probing: bool = False        # the next pass with proposals decides whether to back off again
    recent: deque = field(default_factory=deque)  # (proposed, accepted) of the last passes

    def __post_init__(self):
        if self.longest < 1:
            raise ValueError("the longest proposal must be at least one token")
        self.shortest = max(1, min(self.shortest, self.longest))
        self.threshold = max(self.threshold, self.row_cost)
        self.length = self.length or self.shortest
        self.next_cool_down = self.next_cool_down or self.first_cool_down

    @property
    def backed_off(self) -> bool:
        return self.cool_down_left > 0

    def proposal_length(self) -> int:
        """How many tokens to propose for the next pass: 0 while backed off."""
        return 0 if self.backed_off else self.length

    def generated(self, tokens: int) -> None:
        """`tokens` came out of a pass without proposals (backed off, or nothing to look up)."""
        self.cool_down_left = max(0, self.cool_down_left - tokens)

    def verified(self, proposed: int, accepted: int) -> None:
        """A pass checked `proposed` proposals and accepted the first `accepted` of them."""
        if proposed < 1:
            return
        self.length = (min(self.longest, 2 * self.length) if accepted >= proposed
                       else max(self.shortest, min(self.longest, accepted + 1)))
        self.length = min(self.length, self._paying_length(proposed, accepted))
        if self.probing:
            self.probing = False
            if accepted == 0:
                self._back_off()
                return
        self.recent.append((proposed, accepted))
        if len(self.recent) > self.window:
            self.recent.popleft()
        if len(self.recent) == self.window:
            if self._acceptance() < self.threshold:
                self._back_off()
            else:
                self.next_cool_down = self.first_cool_down

    def _paying_length(self, proposed: int, accepted: int) -> int:
        """The longest proposal whose last token still pays, at the recent acceptance."""
        passes = [*self.recent, (proposed, accepted)][-self.window:]
        return self._paying_at(sum(a for _, a in passes) / sum(p for p, _ in passes))

    def _paying_at(self, acceptance: float) -> int:
        if self.row_cost <= 0 or acceptance >= 1:
            return self.longest
        if acceptance <= self.row_cost:
            return 1
        return max(1, min(self.longest, int(math.log(self.row_cost) / math.log(acceptance))))

    def _acceptance(self) -> float:
        return sum(a for _, a in self.recent) / sum(p for p, _ in self.recent)

    def _back_off(self) -> None:
        # The probe after the cool-down is as wide as pays at the acceptance that backed off
        # (one token where width is dear), not `shortest`: on prose, probes are most of the cost.
        probe = self._paying_at(self._acceptance()) if self.recent else self.length  # a failed probe
        self.cool_down_left = self.next_cool_down
        self.next_cool_down = min(self.longest_cool_down, 2 * self.next_cool_down)
        self.recent.clear()
        self.probing = True
        self.length = min(self.shortest, probe)

