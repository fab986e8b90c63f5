"""Prompt lookup follows the copy it is making (meshdesk/core/prompt_lookup.py): the copy
position, substitutions (renames) learnt from the answer, and re-anchoring after an insertion.

Each case is a prompt and an answer so far; the variants switch one piece off, so every row
shows what that piece adds (the plain lookup is `follow_copies=False`)."""

from __future__ import annotations

import pytest

from meshdesk.core.prompt_lookup import PromptLookup

PLAIN = {"follow_copies": False}
NO_RENAMES = {"renames": 0}
NO_REANCHOR = {"reanchor_window": 0}
ALL = {"reanchor_window": 32}  # re-anchoring is off by default (docs/decisions.md)

# Source 1 2 3 4 5 6, then a later 2 3 4 5 followed by 9: the answer copying from 1 goes on as
# the source (6), where the latest 4-gram would say 9.
REPEATED_RUN = ([1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 9], [1, 2, 3, 4, 5])
# The cases below copy a run (LEAD) first: a miss is guessed past, or re-anchored, only after a
# copy of at least STREAK tokens.
LEAD = [20, 21, 22, 23, 24, 25]
# The answer renames 1 -> 9: "1 7" written "9 7", then "2 1 3 4" as "2 9 3 4": the next 1
# (before 6 8) is proposed as 9.
RENAME = ([0, *LEAD, 1, 7, 2, 1, 3, 4, 1, 6, 8, 0], [*LEAD, 9, 7, 2, 9, 3, 4])
# After the rename the copy is lost (8 8 inserted); the tail "2 9" is nowhere, "2 1" is.
RENAMED_TAIL = ([0, *LEAD, 1, 7, 2, 1, 3, 4, 0], [*LEAD, 9, 7, 8, 8, 2, 9])
# The answer inserts 1 1 into its copy, then writes 8: one token near where the copy was finds
# it again (no 2-gram "1 8" occurred).
INSERTION = ([0, *LEAD, 8, 9, 4, 3, 0], [*LEAD, 1, 1, 8])
# Right after a miss, the source is proposed past the missed token, as if it were a substitution.
JUST_MISSED = ([0, *LEAD, 8, 9, 4, 3, 0], [*LEAD, 1])
# ... but not after a copy of two tokens: they may have matched by chance.
SHORT_COPY = ([0, 5, 6, 7, 8, 9, 4, 3, 0], [5, 6, 1])


@pytest.mark.parametrize("case, options, expected", [
    (REPEATED_RUN, ALL, [6, 2, 3]),
    (REPEATED_RUN, PLAIN, [9, 1, 2]),
    (RENAME, ALL, [9, 6, 8]),
    (RENAME, NO_RENAMES, [1, 6, 8]),   # the copy is lost at the second 9; "3 4" finds it, unrenamed
    (RENAME, PLAIN, [1, 6, 8]),
    (RENAMED_TAIL, NO_REANCHOR, [3, 4, 0]),
    (RENAMED_TAIL, {**NO_REANCHOR, **NO_RENAMES}, []),
    (INSERTION, ALL, [9, 4, 3]),
    (INSERTION, NO_REANCHOR, []),
    (INSERTION, {}, []),               # the default: re-anchoring is off
    (INSERTION, PLAIN, []),
    (JUST_MISSED, ALL, [9, 4, 3]),
    (JUST_MISSED, PLAIN, []),
    (SHORT_COPY, ALL, []),
])
def test_copies(case, options, expected):
    prompt, answer = case
    lookup = PromptLookup(**options)
    lookup.start_answer(len(prompt))
    assert lookup.propose(prompt + answer, 3) == expected


def test_renames_are_learnt_from_the_answer_only():
    # The prompt itself has "LEAD 1 7" and "LEAD 9 7" (two loops over two dicts): no rename in it.
    prompt = [0, *LEAD, 1, 7, 0, *LEAD, 9, 7, 0]
    lookup = PromptLookup()
    lookup.start_answer(len(prompt))
    lookup.follow(prompt)
    assert lookup.renames == {}
    unaware = PromptLookup()  # an answer from the start: the same tokens teach 1 -> 9
    unaware.follow(prompt)
    assert unaware.renames == {1: 9}


def test_a_new_answer_forgets_the_last_ones_renames():
    prompt, answer = RENAME
    lookup = PromptLookup()
    lookup.start_answer(len(prompt))
    lookup.follow(prompt + answer)
    assert lookup.renames == {1: 9}
    lookup.start_answer(len(prompt + answer))
    assert lookup.renames == {} and lookup.propose(prompt + answer, 3) == [1, 6, 8]


def test_only_the_latest_renames_are_kept():
    # Four runs, each ending "a 7" in the prompt and "b 7" in the answer: each teaches a -> b.
    runs = [list(range(10 * i + 1, 10 * i + 7)) for i in range(4)]
    prompt = [0] + [token for i, run in enumerate(runs) for token in (*run, 100 + i, 7)]
    answer = [token for i, run in enumerate(runs) for token in (*run, 200 + i, 7)]
    lookup = PromptLookup(renames=2)
    lookup.start_answer(len(prompt))
    lookup.follow(prompt + answer)
    assert lookup.renames == {102: 202, 103: 203}


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        PromptLookup(renames=-1)
    with pytest.raises(ValueError):
        PromptLookup(reanchor_window=-1)


def test_a_rename_the_answer_contradicts_is_forgotten():
    prompt, answer = RENAME
    lookup = PromptLookup()
    lookup.start_answer(len(prompt))
    lookup.follow(prompt + answer + [1])  # the old name, where 9 was proposed: no rename after all
    assert lookup.renames == {}
    assert lookup.propose(prompt + answer + [1], 2) == [6, 8]
