"""Prompt lookup (meshdesk/core/prompt_lookup.py): n-gram proposals from the sequence itself."""

from __future__ import annotations

import random
import time

import pytest

from meshdesk.core.prompt_lookup import PromptLookup


@pytest.mark.parametrize("sequence, count, expected", [
    # The longest suffix that occurred before wins: (3, 4) is also after (9, 3), but (1, 2, 3) is longer.
    ([1, 2, 3, 4, 5, 9, 3, 7, 1, 2, 3], 2, [4, 5]),
    # The most recent earlier occurrence wins among equally long ones.
    ([1, 2, 7, 1, 2, 8, 0, 1, 2], 1, [8]),
    # At most `count` tokens, cut short by nothing: a continuation that reaches the present
    # goes on with its own proposals, as a repeating pattern would.
    ([5, 6, 5, 6, 5, 6], 5, [5, 6, 5, 6, 5]),
    ([1, 2, 3, 1, 2], 6, [3, 1, 2, 3, 1, 2]),
    # No suffix of two or more tokens occurred before: nothing (a single token is not enough).
    ([1, 2, 3, 4, 3], 4, []),
    ([], 4, []),
    ([7], 4, []),
    ([1, 2, 1, 2], 0, []),
])
def test_proposals(sequence, count, expected):
    assert PromptLookup().propose(sequence, count) == expected


def test_the_largest_ngram_bounds_the_match():
    # (1, 2, 3, 4, 5) occurred twice; with n-grams up to 2 only the latest (4, 5) counts (where
    # the match is looked up afresh at each token; a followed copy keeps to the first, below).
    sequence = [1, 2, 3, 4, 5, 6, 0, 4, 5, 7, 1, 2, 3, 4, 5]
    assert PromptLookup(largest_ngram=5, follow_copies=False).propose(sequence, 1) == [6]
    assert PromptLookup(largest_ngram=2, follow_copies=False).propose(sequence, 1) == [7]
    assert PromptLookup(largest_ngram=2).propose(sequence, 1) == [6]


def test_the_smallest_ngram_can_be_one_token():
    assert PromptLookup(smallest_ngram=1).propose([1, 2, 3, 4, 3], 2) == [4, 3]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        PromptLookup(largest_ngram=2, smallest_ngram=3)
    with pytest.raises(ValueError):
        PromptLookup(smallest_ngram=0)


def test_growing_a_sequence_matches_looking_it_up_afresh():
    chooser = random.Random(7)
    sequence = [chooser.randrange(6) for _ in range(400)]
    growing = PromptLookup()
    for length in range(len(sequence) + 1):
        assert growing.propose(sequence[:length], 5) == PromptLookup().propose(sequence[:length], 5)


def test_a_sequence_that_diverges_rebuilds_from_what_it_shares():
    lookup = PromptLookup()
    assert lookup.propose([1, 2, 3, 9, 1, 2], 2) == [3, 9]
    # A new request sharing only [1, 2, 3]: what followed it before (9...) is forgotten.
    assert lookup.propose([1, 2, 3, 4, 1, 2], 2) == [3, 4]
    assert lookup.propose([1, 2], 2) == []
    assert lookup.tokens == [1, 2]


def test_numpy_arrays_are_sequences_too():
    np = pytest.importorskip("numpy")
    assert PromptLookup().propose(np.array([4, 5, 6, 4, 5], dtype=np.intc), 2) == [6, 4]


def test_a_long_context_costs_little_per_pass():
    chooser = random.Random(3)
    prompt = [chooser.randrange(50_000) for _ in range(20_000)]
    lookup = PromptLookup()
    started = time.perf_counter()
    lookup.propose(prompt, 8)
    indexed = time.perf_counter() - started
    sequence = list(prompt)
    started = time.perf_counter()
    for _ in range(200):  # one pass each: the answer grows a token at a time
        sequence.append(chooser.randrange(50_000))
        lookup.propose(sequence, 8)
    per_pass = (time.perf_counter() - started) / 200
    # Generous bounds for a loaded machine; rescanning 20k tokens per pass would be ~10 ms+.
    assert indexed < 1.0, indexed
    assert per_pass < 0.003, per_pass
