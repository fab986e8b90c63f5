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

from meshdesk.adapters.llama.speculative import PendingProposal, Proposer, synchronize
from meshdesk.core.prompt_lookup import PromptLookup
from meshdesk.core.speculation_policy import SEEDED_ROW_COST, SpeculationPolicy

DEFAULT_NGRAM_MAX = 8
MEASURED_WIDTH = 5   # positions of the wide pass `measure_row_cost` times against a one-token pass
MEASUREMENTS = 4
MAX_ROW_COST = 0.6   # the most measured here was 0.47 (one CPU thread); more is contention
SLOW_PASS_SECONDS = 1.0


class PromptLookupDraft(Proposer):
    mode = "ngram"

    def __init__(self, ngram_max: int = DEFAULT_NGRAM_MAX, context: int | None = None, row_cost: float = 0.0):
        super().__init__(ngram_max)
        self.context = context  # the main model's n_ctx: no proposal runs past it
        self.row_cost = row_cost  # see core.speculation_policy; `measure_row_cost`
        self.lookup = PromptLookup()
        self.seeded = False
        self.answering = False
        self.policy = self._new_policy()

    def begin(self, seeded: bool = False) -> None:
        """A new request starts proposing afresh: what was accepted on the last says little. A
        seeded one uses a fixed row cost: the measured one differs between host processes."""
        super().begin(seeded)
        self.seeded = seeded
        self.policy = self._new_policy()
        self.answering = False  # the first call's sequence is the prompt

    def reset(self) -> None:
        self.lookup = PromptLookup()
        self.policy = self._new_policy()

    def _new_policy(self) -> SpeculationPolicy:
        row_cost = SEEDED_ROW_COST if self.seeded else self.row_cost
        return SpeculationPolicy(longest=self.draft_max, row_cost=row_cost)

    def __call__(self, input_ids, /, **kwargs):
        """Proposals continuing `input_ids` (numpy, int32; empty while backed off)."""
        self._settle()
        sequence = input_ids.tolist()
        if not self.answering:
            self.answering = True
            self.lookup.start_answer(len(sequence))
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
    devices and (split) this link as they are now, timed at load. The widths take turns and the
    quickest of each counts: another process's burst only ever lengthens a pass, and a cost read
    too high would hold prompt lookup back for the host's whole life (so it is capped, too)."""
    if getattr(llama._ctx, "memory", None) is None:
        return 0.0  # no KV cache: an embedding model, which never generates
    start = llama.n_tokens
    token = llama.token_bos() if llama.token_bos() >= 0 else 0

    def timed(width: int) -> float:
        llama.n_tokens = start
        began = time.perf_counter()
        llama.eval([token] * width)
        synchronize(llama)
        return time.perf_counter() - began

    try:
        timed(1), timed(MEASURED_WIDTH)  # the first of each width allocates: not counted
        ones, wides = [], []
        # A slow model (a pass over a second) is timed once: its load must not grow by a minute.
        while len(ones) < MEASUREMENTS and not (ones and ones[-1] > SLOW_PASS_SECONDS):
            ones.append(timed(1))
            wides.append(timed(MEASURED_WIDTH))
        one, wide = min(ones), min(wides)
    except Exception:  # a model that cannot decode this way (an embedding model) never generates
        return 0.0
    finally:
        llama.n_tokens = start
        llama._ctx.kv_cache_seq_rm(-1, start, -1)
    if one <= 0:
        return 0.0
    return round(min(MAX_ROW_COST, max(0.0, (wide - one) / (MEASURED_WIDTH - 1) / one)), 3)
