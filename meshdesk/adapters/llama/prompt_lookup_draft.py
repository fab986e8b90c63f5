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

import numpy as np

from meshdesk.adapters.llama.speculative import PendingProposal, Proposer
from meshdesk.core.prompt_lookup import PromptLookup
from meshdesk.core.speculation_policy import SpeculationPolicy

DEFAULT_NGRAM_MAX = 8


class PromptLookupDraft(Proposer):
    mode = "ngram"

    def __init__(self, ngram_max: int = DEFAULT_NGRAM_MAX, context: int | None = None):
        super().__init__(ngram_max)
        self.context = context  # the main model's n_ctx: no proposal runs past it
        self.lookup = PromptLookup()
        self.policy = SpeculationPolicy(longest=ngram_max)

    def begin(self) -> None:
        """A new request starts proposing afresh: what was accepted on the last says little."""
        super().begin()
        self.policy = SpeculationPolicy(longest=self.draft_max)

    def reset(self) -> None:
        self.lookup = PromptLookup()
        self.policy = SpeculationPolicy(longest=self.draft_max)

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
