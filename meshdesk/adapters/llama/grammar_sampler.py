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
"""

from __future__ import annotations

import ctypes
import math

import llama_cpp
from llama_cpp._internals import LlamaTokenDataArray


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
        if not self.allows(token):
            self.refusals += 1
            array = self._array(ctx, idx)
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
            llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(array))
            token = int(array.data[array.selected].id)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        self.chain.accept(token)
        return token


class GrammarFirst:
    """Mixed into a `Llama` class: `_init_sampler(grammar=...)` gives a `GrammarFirstSampler`."""

    last_sampler: GrammarFirstSampler | None = None
    grammar_first = True  # False: llama-cpp-python's own way, the grammar in the chain (bench/grammar.py)

    def _init_sampler(self, *args, grammar=None, **kwargs):
        if not self.grammar_first:
            return super()._init_sampler(*args, grammar=grammar, **kwargs)
        chain = super()._init_sampler(*args, grammar=None, **kwargs)
        if grammar is None:
            return chain
        self.last_sampler = GrammarFirstSampler(self, chain, grammar)
        return self.last_sampler


def with_grammar_first(model_class: type) -> type:
    return type(f"GrammarFirst{model_class.__name__}", (GrammarFirst, model_class), {})
