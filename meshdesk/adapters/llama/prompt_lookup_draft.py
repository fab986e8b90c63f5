"""Prompt-lookup speculation: proposals from the sequence itself, verified like a draft model's.

`PromptLookupDraft` is a `speculative.Proposer`: `SpeculativeLlama` verifies its proposals in
one batched pass and keeps the longest accepted prefix, so greedy output is the main model's own
(up to the near-tie rule of docs/decisions.md). It needs no second model: `core.prompt_lookup`
finds what followed the sequence's tail where it last occurred, and `core.speculation_policy`
says how many tokens to propose, and stops proposing while they are rejected. The proposal
length varies (a constant one is what lets a draft model's graph be reused; here there is no
draft to run).
"""

from __future__ import annotations

import time

import numpy as np

from meshdesk.adapters.llama.speculative import PendingProposal, Proposer
from meshdesk.core.prompt_lookup import PromptLookup
from meshdesk.core.speculation_policy import SpeculationPolicy

DEFAULT_NGRAM_MAX = 8
MEASURED_WIDTH = 5   # positions of the wide pass `measure_row_cost` times against a one-token pass
MEASUREMENTS = 3
SLOW_PASS_SECONDS = 1.0


class PromptLookupDraft(Proposer):
    mode = "ngram"

    def __init__(self, ngram_max: int = DEFAULT_NGRAM_MAX, context: int | None = None, row_cost: float = 0.0):
        super().__init__(ngram_max)
        self.context = context  # the main model's n_ctx: no proposal runs past it
        self.row_cost = row_cost  # see core.speculation_policy; `measure_row_cost`
        self.lookup = PromptLookup()
        self.policy = self._new_policy()

    def begin(self) -> None:
        """A new request starts proposing afresh: what was accepted on the last says little."""
        super().begin()
        self.policy = self._new_policy()

    def reset(self) -> None:
        self.lookup = PromptLookup()
        self.policy = self._new_policy()

    def _new_policy(self) -> SpeculationPolicy:
        return SpeculationPolicy(longest=self.draft_max, row_cost=self.row_cost)

    def __call__(self, input_ids, /, **kwargs):
        """Proposals continuing `input_ids` (numpy, int32; empty while backed off)."""
        self._settle()
        sequence = input_ids.tolist()
        length = self.policy.proposal_length()
        if self.context is not None:
            length = min(length, max(0, self.context - len(sequence) - 1))
        proposals = self.lookup.propose(sequence, length) if length else []
        if not length:
            self.lookup.follow(sequence)  # the index keeps up while nothing is proposed
        self.pending = PendingProposal(start=len(sequence), tokens=proposals,
                                       held_back=self.policy.backed_off)
        return np.array(proposals, dtype=np.intc)

    def _settle(self) -> PendingProposal | None:
        pending = super()._settle()
        if pending is None:
            return None
        if pending.checked:
            self.policy.verified(pending.checked, pending.matched)
        else:
            self.policy.generated(pending.sampled)
        return pending


def measure_row_cost(llama) -> float:
    """One more verified position's time as a share of a one-token pass, on this model, these
    devices and (split) this link as they are now: the median of a few timed passes at load.
    Measured once, so within a process a seeded request's batch shapes never depend on timing."""
    start = llama.n_tokens
    token = llama.token_bos() if llama.token_bos() >= 0 else 0

    def timed(width: int) -> float:
        times: list[float] = []
        # The first of each width allocates: not counted. A slow model (a pass over a second)
        # is timed once more, not three times: its load must not grow by a minute.
        while len(times) < 2 or (len(times) <= MEASUREMENTS and times[-1] < SLOW_PASS_SECONDS):
            llama.n_tokens = start
            began = time.perf_counter()
            llama.eval([token] * width)
            times.append(time.perf_counter() - began)
        counted = sorted(times[1:])
        return counted[len(counted) // 2]

    try:
        one, wide = timed(1), timed(MEASURED_WIDTH)
    except Exception:  # a model that cannot decode this way (an embedding model) never generates
        return 0.0
    finally:
        llama.n_tokens = start
        llama._ctx.kv_cache_seq_rm(-1, start, -1)
    return round(min(1.0, max(0.0, (wide - one) / (MEASURED_WIDTH - 1) / one)), 3) if one > 0 else 0.0
