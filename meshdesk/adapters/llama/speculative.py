"""Speculative decoding inside the model host child: a small draft `Llama` proposes tokens.

llama-cpp-python's `Llama.generate` asks its `draft_model` (a `LlamaDraftModel`) for a
continuation of the tokens it has so far, evaluates its own last token plus the proposals in one
batch, and keeps sampling from that batch's logits for as long as its samples match the
proposals. The first mismatch is the main model's own token; the rest of the batch is dropped
from its KV cache. Every token is therefore sampled by the main model from logits conditioned on
the accepted prefix, so greedy output is the main model's own, whatever the draft proposes.

What proposes is a `Proposer`: `DraftModel` here, or prompt lookup
(`prompt_lookup_draft.PromptLookupDraft`), which needs no second model. Both count, per
generation, what the main model accepted (`SpeculationStats`).

`DraftModel` runs the draft greedily for a constant `draft_max` tokens (a constant length lets
llama.cpp reuse its compute graph), keeping the draft's KV cache across calls: only the tokens
past the longest common prefix with what the draft has already seen are evaluated.

`SpeculativeLlama` is the main `Llama` with two changes for this loop:
- its logits for a verification batch (at most `draft_max + 1` tokens) are kept in llama.cpp
  for every position, but a prompt only keeps its last position's, and none are copied into
  Python: llama-cpp-python's own `logits_all=True` (what it switches on for a draft model)
  computes the output layer for every prompt token and keeps an n_ctx x n_vocab float array
  (4 GiB for Gemma's 262k vocabulary at 4096 tokens). Sampling reads llama.cpp's logits
  directly, so nothing else needs them; `logprobs` are refused as without a draft.
- every sampled token is reported to the proposer, which counts how many of its proposals
  the main model accepted.

A grammar (tool calls, structured output) keeps working: the sampler (grammar_sampler.py) is
asked for each position in turn, accepts only the tokens the main model sampled, and a proposal
the grammar forbids is simply a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import llama_cpp
from llama_cpp._internals import LlamaSampler
from llama_cpp.llama_speculative import LlamaDraftModel

DEFAULT_DRAFT_MAX = 8
# As llama.cpp's own speculative decoding: vocabularies may differ by padding at the end.
VOCABULARY_SIZE_SLACK = 128
FIRST_COMPARED_TOKEN = 5


@dataclass
class SpeculationStats:
    """Proposals and acceptances of one generation (or of many, added together)."""

    proposed: int = 0   # proposed tokens the main model checked (a generation that ends mid-step
                        # leaves the rest of that step's proposals unchecked, and uncounted)
    accepted: int = 0   # of those, tokens the main model sampled itself
    steps: int = 0      # main-model passes after the prompt's (with proposals or, backed off, without)
    generated: int = 0  # tokens the main model sampled during those passes
    backed_off: int = 0  # of those, tokens sampled while proposals were held back (prompt lookup)

    def to_dict(self) -> dict:
        return {"proposed": self.proposed, "accepted": self.accepted, "steps": self.steps,
                "generated": self.generated, "backed_off": self.backed_off}


@dataclass
class PendingProposal:
    start: int                # position in the sequence of the first proposed token
    tokens: list[int]
    checked: int = 0          # proposals the main model sampled a token for
    matched: int = 0
    mismatched: bool = False
    sampled: int = 0
    held_back: bool = False   # no proposals because the policy backed off


class Proposer(LlamaDraftModel):
    """What `SpeculativeLlama` verifies: proposals for a sequence, and counts of what the main
    model accepted. Subclasses propose (`DraftModel`, `prompt_lookup_draft.PromptLookupDraft`)."""

    mode = "draft"  # what the ready line and the finish event call it

    def __init__(self, draft_max: int):
        if draft_max < 1:
            raise ValueError("draft_max must be at least 1")
        self.draft_max = draft_max
        self.stats = SpeculationStats()
        self.pending: PendingProposal | None = None

    def fit_vocabulary(self, main_vocabulary: int) -> None:
        """The main model knows `main_vocabulary` tokens; proposals must stay within them."""

    def begin(self, seeded: bool = False) -> None:
        """Starts counting a new generation (`seeded`: a request that must repeat exactly)."""
        self.stats = SpeculationStats()
        self.pending = None

    def reset(self) -> None:
        """Forgets what earlier requests left, so proposals depend on the request alone."""

    def finish(self) -> SpeculationStats:
        """Closes the last proposal and returns the generation's counts."""
        self._settle()
        return self.stats

    def observe(self, position: int, token: int) -> None:
        """The main model sampled `token` for `position` of the sequence."""
        pending = self.pending
        if pending is None:
            return
        pending.sampled += 1
        offset = position - pending.start
        if pending.mismatched or offset != pending.matched or offset >= len(pending.tokens):
            return
        pending.checked += 1
        if token == pending.tokens[offset]:
            pending.matched += 1
        else:
            pending.mismatched = True

    def _settle(self) -> PendingProposal | None:
        pending, self.pending = self.pending, None
        if pending is None or pending.sampled == 0:
            return None
        self.stats.proposed += pending.checked
        self.stats.accepted += pending.matched
        self.stats.steps += 1
        self.stats.generated += pending.sampled
        if pending.held_back:
            self.stats.backed_off += pending.sampled
        return pending


class DraftModel(Proposer):
    """Greedy proposals from a second `Llama` that shares the main model's vocabulary."""

    def __init__(self, draft: llama_cpp.Llama, draft_max: int = DEFAULT_DRAFT_MAX):
        super().__init__(draft_max)
        self.draft = draft
        self.greedy = LlamaSampler()
        self.greedy.add_greedy()
        self.vocabulary_size = draft.n_vocab()  # tokens both models know; see `fit_vocabulary`

    def fit_vocabulary(self, main_vocabulary: int) -> None:
        self.vocabulary_size = min(main_vocabulary, self.draft.n_vocab())

    def reset(self) -> None:
        """Forgets the draft's KV cache, so its proposals depend on the request alone."""
        self.draft.reset()

    def __call__(self, input_ids, /, **kwargs):
        """Proposals continuing `input_ids`, as the draft's own token array (numpy, int32)."""
        self._settle()
        sequence = input_ids.tolist()
        if len(sequence) + self.draft_max > self.draft.n_ctx():
            return self.draft.input_ids[:0].copy()  # no room left in the draft's context
        proposals = self._propose(sequence)
        self.pending = PendingProposal(start=len(sequence), tokens=proposals)
        start = len(sequence)
        # The draft's token buffer holds every proposal it evaluated; the last one goes past
        # its n_tokens, where the next evaluation overwrites it.
        self.draft.input_ids[start:start + len(proposals)] = proposals
        return self.draft.input_ids[start:start + len(proposals)].copy()

    def _propose(self, sequence: list[int]) -> list[int]:
        draft = self.draft
        seen = draft.input_ids[: draft.n_tokens].tolist()
        common = 0
        for a, b in zip(seen, sequence):
            if a != b:
                break
            common += 1
        # The last token is evaluated again when nothing is new: its logits are what we need.
        draft.n_tokens = min(common, len(sequence) - 1)  # `eval` drops the KV cache past this
        draft.eval(sequence[draft.n_tokens:])
        proposals = [self._greedy_token()]
        while len(proposals) < self.draft_max:
            draft.eval(proposals[-1:])
            proposals.append(self._greedy_token())
        # A token only the draft knows (vocabularies may differ in padding) ends the proposal.
        known = next((i for i, token in enumerate(proposals) if token >= self.vocabulary_size),
                     len(proposals))
        return proposals[:known]

    def _greedy_token(self) -> int:
        return self.greedy.sample(self.draft._ctx, -1)


class SpeculativeLlama(llama_cpp.Llama):
    """The main model, verifying a `Proposer`'s proposals (see the module docstring)."""

    speculation: Proposer | None = None

    def attach_draft(self, proposer: Proposer) -> None:
        proposer.fit_vocabulary(self.n_vocab())
        self.speculation = proposer
        self.draft_model = proposer

    def eval(self, tokens) -> None:
        if self.speculation is None:
            return super().eval(tokens)
        verifying = len(tokens) <= self.speculation.draft_max + 1
        self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
        for start in range(0, len(tokens), self.n_batch):
            batch = tokens[start:start + self.n_batch]
            n_past = self.n_tokens
            self._batch.set_batch(batch=batch, n_past=n_past, logits_all=verifying)
            self._ctx.decode(self._batch)
            self.input_ids[n_past:n_past + len(batch)] = batch
            self.n_tokens += len(batch)
            self._requires_eval = False

    def sample(self, *args, **kwargs) -> int:
        token = super().sample(*args, **kwargs)
        index = kwargs.get("idx")
        if self.speculation is not None and index is not None:
            self.speculation.observe(index + 1, token)
        return token


def synchronize(llama) -> None:
    """Waits for the pass `eval` started: on rpc devices `llama_decode` returns before the graph
    has run, so an unsynchronised pass's time is the one before it (interleaved widths read 0)."""
    llama_cpp.llama_synchronize(llama._ctx.ctx)


def vocabulary_mismatch(main: llama_cpp.Llama, draft: llama_cpp.Llama) -> str | None:
    """Why `draft` cannot propose tokens for `main`, or None when they share a vocabulary."""
    if main.n_vocab() < 1 or abs(main.n_vocab() - draft.n_vocab()) > VOCABULARY_SIZE_SLACK:
        return f"the draft has {draft.n_vocab()} tokens, the model {main.n_vocab()}"
    if (main.token_bos(), main.token_eos()) != (draft.token_bos(), draft.token_eos()):
        return "the draft's start and end tokens differ from the model's"
    main_vocab, draft_vocab = main._model, draft._model
    for token in range(FIRST_COMPARED_TOKEN, min(main.n_vocab(), draft.n_vocab())):
        if main_vocab.token_get_text(token) != draft_vocab.token_get_text(token):
            return f"token {token} differs between the draft and the model"
    return None

