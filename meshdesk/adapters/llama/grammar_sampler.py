"""Grammar-constrained sampling that checks the grammar on the chosen token first.

llama-cpp-python puts the grammar into its sampler chain, so every token step runs the grammar
over the whole vocabulary (262k tokens for Gemma 3) before choosing one: most of a constrained
answer's time. llama.cpp's own `common_sampler` does better, and this does the same: sample with
the chain alone, ask the grammar about that one token, and only when the grammar refuses it
apply the grammar to every candidate and sample again. The answer is the same (a token the
grammar allows, chosen from the same distribution restricted to what it allows); the cost is
the grammar's, per step, only where the model wanted something else.

`with_grammar_first(model_class)` makes a `Llama` class (plain or speculative) sample this way
whenever a request passes `grammar=`.

A grammar's work per token is bounded: llama.cpp keeps one parse stack per way the text so far
can be read, and an ambiguous grammar (alternatives that share a start, nested, or an optional
item repeated) doubles them at every token, so one step may take seconds, then minutes. A step
whose grammar work (the check, the whole-vocabulary pass, the accept) takes longer than
`STEP_LIMIT_SECONDS` ends the answer with `GrammarTooAmbiguous`, the client's request error.
"""

from __future__ import annotations

import ctypes
import math
import time

import llama_cpp
from llama_cpp._internals import LlamaTokenDataArray

# Measured in this thread's CPU time, so a busy machine (other processes, other threads) never
# makes an honest step look long: the worst honest step measured, a forced tool call on Gemma 3's
# 262k vocabulary (a whole-vocabulary pass), took 60 ms of CPU; on a loaded 2-core VM it took over
# 250 ms of wall time. An ambiguous grammar grows 2-5x a token (the reviewer's: 0.13, 0.54, 2.7 s),
# so half a second is 8x beyond the honest and stops the ambiguous within a few seconds.
STEP_LIMIT_SECONDS = 0.5
TOO_AMBIGUOUS = "the schema is too ambiguous for a grammar"


class GrammarTooAmbiguous(Exception):
    """One step of the grammar took longer than `STEP_LIMIT_SECONDS`: the client's schema."""


class GrammarFirstSampler:
    """Stands in for llama-cpp-python's `LlamaSampler` (its `sample(ctx, idx)`) for one request."""

    def __init__(self, llama, chain, grammar):
        self.chain = chain  # the request's LlamaSampler, built without the grammar
        self.vocabulary = llama.n_vocab()
        taken = getattr(grammar, "take", None)  # grammar.CheckedGrammar: parsed once already
        self.grammar = (taken and taken()) or llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not self.grammar:
            raise ValueError("llama.cpp could not parse the grammar")
        self.candidates = LlamaTokenDataArray(n_vocab=self.vocabulary)
        self.single = llama_cpp.llama_token_data()
        self.refusals = 0  # steps where the grammar refused the chain's choice (for the bench)
        self.steps = 0
        self.clock = time.thread_time  # the work of this thread, whatever else the machine runs

    def __del__(self):
        if getattr(self, "grammar", None):
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None

    def _array(self, ctx, idx: int) -> llama_cpp.llama_token_data_array:
        logits = llama_cpp.llama_get_logits_ith(ctx.ctx, idx)
        self.candidates.copy_logits((ctypes.c_float * self.vocabulary).from_address(ctypes.addressof(logits.contents)))
        self.candidates.candidates.selected = -1
        return self.candidates.candidates

    def allows(self, token: int) -> bool:
        self.single.id, self.single.logit, self.single.p = token, 1.0, 0.0
        one = llama_cpp.llama_token_data_array(data=ctypes.pointer(self.single), size=1, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(one))
        return not math.isinf(self.single.logit)

    def sample(self, ctx, idx: int = -1) -> int:
        self.steps += 1
        array = self._array(ctx, idx)
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(array))
        token = int(array.data[array.selected].id)
        started = self.clock()
        if not self.allows(token):
            self.refusals += 1
            array = self._array(ctx, idx)
            self._bounded(started)
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
            self._bounded(started)
            llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(array))
            token = int(array.data[array.selected].id)
            started = self.clock()
        llama_cpp.llama_sampler_accept(self.grammar, token)
        self._bounded(started)
        self.chain.accept(token)
        return token

    def _bounded(self, started: float) -> None:
        if self.clock() - started > STEP_LIMIT_SECONDS:
            self.__del__()  # its parse stacks may be gigabytes: free them now, not at the next request
            raise GrammarTooAmbiguous(TOO_AMBIGUOUS)


class GrammarFirst:
    """Mixed into a `Llama` class: `_init_sampler(grammar=...)` gives a `GrammarFirstSampler`.
    It also remembers the last token sampled (which client stop ended an answer, see host.py),
    and renders the control tokens in `kept_tokens` (tool call markers) that llama-cpp-python's
    streamed text would drop (`tool_output.detokenize_keeping`)."""

    last_sampler: GrammarFirstSampler | None = None
    grammar_first = True  # False: llama-cpp-python's own way, the grammar in the chain (bench/grammar.py)
    last_token: int | None = None
    kept_tokens: frozenset = frozenset()

    def sample(self, *args, **kwargs) -> int:
        self.last_token = super().sample(*args, **kwargs)
        return self.last_token

    def detokenize(self, tokens, prev_tokens=None, special: bool = False) -> bytes:
        if special or not self.kept_tokens:
            return super().detokenize(tokens, prev_tokens=prev_tokens, special=special)
        return detokenize_keeping(list(tokens), self.kept_tokens,
                                  lambda run, keep: super(GrammarFirst, self).detokenize(run, special=keep))

    def _init_sampler(self, *args, grammar=None, **kwargs):
        if not self.grammar_first:
            return super()._init_sampler(*args, grammar=grammar, **kwargs)
        chain = super()._init_sampler(*args, grammar=None, **kwargs)
        if grammar is None:
            return chain
        self.last_sampler = GrammarFirstSampler(self, chain, grammar)
        return self.last_sampler


def detokenize_keeping(tokens: list[int], kept: frozenset, detokenize) -> bytes:
    """`tokens` as text, each token in `kept` rendered as a special token (its text), the rest as
    plain text: `detokenize(run, special)` renders a run of tokens (llama.cpp renders one token at
    a time and joins them, so runs joined are the whole)."""
    if kept.isdisjoint(tokens):
        return detokenize(tokens, False)
    parts, run = [], []
    for token in tokens:
        if token in kept:
            if run:
                parts.append(detokenize(run, False))
                run = []
            parts.append(detokenize([token], True))
        else:
            run.append(token)
    if run:
        parts.append(detokenize(run, False))
    return b"".join(parts)


def with_grammar_first(model_class: type) -> type:
    return type(f"GrammarFirst{model_class.__name__}", (GrammarFirst, model_class), {})
