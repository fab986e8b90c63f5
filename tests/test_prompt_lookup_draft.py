"""The model host's prompt-lookup proposer apart from a model: the row cost it measures at load,
and the fixed one a seeded request uses (adapters/llama/prompt_lookup_draft.py)."""

from __future__ import annotations

from meshdesk.adapters.llama import prompt_lookup_draft
from meshdesk.adapters.llama.prompt_lookup_draft import MAX_ROW_COST, PromptLookupDraft, measure_row_cost
from meshdesk.core.speculation_policy import SEEDED_ROW_COST


class TimedLlama:
    """Stands in for a `Llama` whose passes take scripted times on a fake clock."""

    def __init__(self, clock: list[float], seconds_for):
        self.clock, self.seconds_for, self.n_tokens = clock, seconds_for, 7
        self.passes: list[int] = []
        self._ctx = self
        self.memory = object()  # a KV cache, as a generative model has

    def token_bos(self) -> int:
        return 1

    def eval(self, tokens) -> None:
        self.passes.append(len(tokens))
        self.clock[0] += self.seconds_for(len(tokens), len([p for p in self.passes if p != "sync"]))

    def kv_cache_seq_rm(self, *_arguments) -> None:
        pass


def measured(monkeypatch, seconds_for) -> tuple[float, TimedLlama]:
    clock = [0.0]
    monkeypatch.setattr(prompt_lookup_draft.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(prompt_lookup_draft, "synchronize", lambda llama: llama.passes.append("sync"))
    llama = TimedLlama(clock, seconds_for)
    return measure_row_cost(llama), llama


def test_the_row_cost_is_one_more_positions_share_of_a_pass(monkeypatch):
    cost, llama = measured(monkeypatch, lambda width, _: 0.020 + 0.008 * (width - 1))
    assert cost == 0.4
    assert llama.n_tokens == 7  # the timed passes leave the sequence as it was
    assert llama.passes[:8] == [1, "sync", 5, "sync", 1, "sync", 5, "sync"]  # in turns, each waited for


def test_a_burst_of_other_work_during_the_wide_passes_does_not_inflate_it(monkeypatch):
    def with_a_burst(width, number):  # another process takes the CPU for passes 4 to 6
        return (0.020 + 0.008 * (width - 1)) * (3 if 4 <= number <= 6 else 1)
    assert measured(monkeypatch, with_a_burst)[0] == 0.4


def test_a_cost_read_far_too_high_is_capped(monkeypatch):
    assert measured(monkeypatch, lambda width, _: 0.020 * width * 2)[0] == MAX_ROW_COST


def test_a_model_without_a_kv_cache_is_not_timed(monkeypatch):
    clock = [0.0]
    llama = TimedLlama(clock, lambda width, _: 0.02)
    llama.memory = None  # an embedding model: llama.cpp gives it no KV cache
    assert measure_row_cost(llama) == 0.0 and llama.passes == []


def test_a_seeded_request_uses_the_fixed_row_cost_not_the_measured_one():
    draft = PromptLookupDraft(8, row_cost=0.13)
    draft.begin(seeded=True)
    assert draft.policy.row_cost == SEEDED_ROW_COST
    draft.reset()  # what the host does next for a seeded request
    assert draft.policy.row_cost == SEEDED_ROW_COST
    draft.begin()
    assert draft.policy.row_cost == 0.13
