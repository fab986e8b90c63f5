"""Which free sequence a newcomer takes in the batching host, and what of its cache it keeps."""

from __future__ import annotations

import pytest

from meshdesk.core.batch_slots import SlotChoice, choose_slot, common_prefix


def test_common_prefix_counts_the_tokens_two_sequences_start_with():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5, 6], [5, 6]) == 2


def test_a_newcomer_takes_the_slot_sharing_the_longest_start_and_keeps_it():
    free = {0: [7, 7, 7], 1: [1, 2, 3, 4, 5], 2: [1, 2]}
    assert choose_slot(free, [1, 2, 3, 4, 9, 9]) == SlotChoice(slot=1, kept=4)


def test_the_prompt_s_last_token_is_always_evaluated_again():
    # the whole prompt is cached, yet its last token's logits are what the first sample needs
    assert choose_slot({0: [1, 2, 3, 4]}, [1, 2, 3]) == SlotChoice(slot=0, kept=2)
    assert choose_slot({0: [1]}, [1]) == SlotChoice(slot=0, kept=0)


def test_a_newcomer_sharing_nothing_takes_the_slot_remembering_least():
    free = {0: [1, 2, 3, 4], 1: [5], 2: [6, 6]}
    assert choose_slot(free, [9, 9, 9]) == SlotChoice(slot=1, kept=0)


def test_a_seeded_request_keeps_nothing_even_when_a_slot_holds_its_prompt():
    free = {0: [1, 2, 3, 4, 5], 1: [8, 8]}
    assert choose_slot(free, [1, 2, 3, 4, 5, 6], reuse=False) == SlotChoice(slot=1, kept=0)


def test_ties_go_to_the_lowest_slot_so_the_choice_is_repeatable():
    assert choose_slot({3: [1, 2], 1: [1, 2]}, [1, 2, 5]).slot == 1
    assert choose_slot({3: [], 1: []}, [4]).slot == 1


def test_no_free_slot_is_an_error_not_a_silent_pick():
    with pytest.raises(ValueError):
        choose_slot({}, [1, 2])
