"""The prompt-lookup back-off (meshdesk/core/speculation_policy.py), driven pass by pass."""

from __future__ import annotations

import pytest

from meshdesk.core.speculation_policy import SpeculationPolicy


def cool_down(policy: SpeculationPolicy) -> int:
    """Generates token by token until proposals come back; returns how many tokens that took."""
    tokens = 0
    while policy.proposal_length() == 0:
        policy.generated(1)
        tokens += 1
        assert tokens < 10_000
    return tokens


def test_lengths_double_while_accepted_whole_and_shrink_to_what_was_accepted():
    policy = SpeculationPolicy(longest=8, shortest=1)
    lengths = []
    for accepted_part in (1.0, 1.0, 1.0, 0.5, 1.0, 0.0):
        length = policy.proposal_length()
        lengths.append(length)
        policy.verified(length, int(length * accepted_part))
    # 1 whole -> 2 whole -> 4 whole -> 8, 4 accepted -> 5 whole -> 8, none -> 1
    assert lengths == [1, 2, 4, 8, 5, 8]
    assert policy.proposal_length() == 1


def test_a_proposal_never_shrinks_below_the_shortest():
    policy = SpeculationPolicy(longest=16, shortest=4)
    assert policy.proposal_length() == 4
    policy.verified(4, 4)
    policy.verified(8, 8)
    assert policy.proposal_length() == 16
    policy.verified(16, 5)
    assert policy.proposal_length() == 6
    policy.verified(6, 0)
    assert policy.proposal_length() == 4


@pytest.mark.parametrize("row_cost, threshold", [(0.0, 0.1), (0.1, 0.1), (0.45, 0.45)])
def test_the_cost_of_width_is_the_least_acceptance_that_pays(row_cost, threshold):
    assert SpeculationPolicy(row_cost=row_cost).threshold == threshold


@pytest.mark.parametrize("row_cost, accepted_of_8, length", [
    (0.0, 6, 7),    # width free: what was accepted plus one
    (0.38, 6, 3),   # 0.75 accepted: a third token is worth 0.42 > 0.38, a fourth 0.32 is not
    (0.38, 7, 7),   # 0.875: up to seven pay (0.875^7 = 0.39)
    (0.38, 3, 1),   # under the cost: one token (and soon a back-off)
    (0.1, 2, 1),    # 0.25 accepted: a second token is worth 0.06 < 0.1, the shortest (4) capped
    (0.1, 5, 4),    # 0.625: four pay (0.15), five do not (0.095)
])
def test_a_proposal_is_no_longer_than_pays(row_cost, accepted_of_8, length):
    policy = SpeculationPolicy(row_cost=row_cost, longest=8, threshold=0.0)
    policy.verified(8, accepted_of_8)
    assert policy.proposal_length() == length


def test_where_width_is_dear_a_window_must_accept_more_than_it_costs():
    policy = SpeculationPolicy(row_cost=0.45, longest=8)
    for _ in range(4):
        policy.verified(4, 2)  # half accepted: above 0.45, it pays
    assert not policy.backed_off
    for _ in range(4):
        policy.verified(4, 1)
    assert policy.backed_off


def test_a_short_longest_caps_the_first_proposal():
    assert SpeculationPolicy(longest=2).proposal_length() == 2  # the shortest, 4, capped
    with pytest.raises(ValueError):
        SpeculationPolicy(longest=0)


def test_a_window_of_low_acceptance_backs_off_for_a_cool_down():
    policy = SpeculationPolicy(window=4, threshold=0.25, first_cool_down=16, longest_cool_down=512)
    for _ in range(3):
        policy.verified(policy.proposal_length(), 0)
        assert not policy.backed_off  # three passes are not yet a window
    policy.verified(policy.proposal_length(), 0)
    assert policy.backed_off and policy.proposal_length() == 0
    assert cool_down(policy) == 16


def test_acceptance_at_the_threshold_keeps_proposing():
    policy = SpeculationPolicy(window=4, threshold=0.25)
    for _ in range(20):
        policy.verified(4, 1)  # exactly a quarter
        assert not policy.backed_off


def test_failed_probes_double_the_cool_down_up_to_a_cap():
    policy = SpeculationPolicy(window=4, first_cool_down=16, longest_cool_down=64)
    for _ in range(4):
        policy.verified(4, 0)
    waits = [cool_down(policy)]
    for _ in range(4):
        policy.verified(policy.proposal_length(), 0)  # one probe pass, rejected: back off again
        waits.append(cool_down(policy))
    assert waits == [16, 32, 64, 64, 64]


def test_a_good_probe_resumes_and_a_good_window_resets_the_cool_down():
    policy = SpeculationPolicy(window=4, threshold=0.25, first_cool_down=16, longest_cool_down=512)
    for _ in range(4):
        policy.verified(4, 0)
    assert cool_down(policy) == 16
    policy.verified(policy.proposal_length(), 2)  # the probe accepted something: go on
    assert not policy.backed_off
    for _ in range(3):
        policy.verified(4, 0)
    # The window (probe included) is 2 of 4 + 0 + 0 + 0: under a quarter, the wait grown.
    assert cool_down(policy) == 32
    policy.verified(policy.proposal_length(), 4)
    for _ in range(3):
        policy.verified(policy.proposal_length(), policy.proposal_length())
    for _ in range(4):
        policy.verified(4, 0)
    assert cool_down(policy) == 16  # a whole good window came first: back to the first wait


def test_passes_without_proposals_change_nothing():
    policy = SpeculationPolicy()
    policy.verified(0, 0)
    policy.generated(5)
    assert policy.proposal_length() == 4 and not policy.recent


def test_the_defaults_probe_at_least_every_32_tokens():
    policy = SpeculationPolicy()
    for _ in range(4):
        policy.verified(4, 0)
    waits = [cool_down(policy)]
    for _ in range(3):
        policy.verified(policy.proposal_length(), 0)
        waits.append(cool_down(policy))
    assert waits == [16, 32, 32, 32]


def test_prose_like_rejections_spend_few_passes_on_proposals():
    """Always rejected, a long answer spends ever fewer passes on proposals."""
    policy = SpeculationPolicy()
    proposing_passes = 0
    for _ in range(2000):
        length = policy.proposal_length()
        if length:
            proposing_passes += 1
            policy.verified(length, 0)
        else:
            policy.generated(1)
    # 4 to back off, then one probe per cool-down of at most 32 tokens.
    assert proposing_passes < 2000 / 32 + 6, proposing_passes


def test_where_width_is_dear_the_probe_after_a_back_off_is_one_token():
    """Prose on a CPU host: the probes are most of what speculation costs, so a probe is only
    as wide as pays at the acceptance that backed off; where width is free it stays wide."""
    dear = SpeculationPolicy(longest=8, row_cost=0.4)
    free = SpeculationPolicy(longest=8, row_cost=0.0)
    for policy in (dear, free):
        for _ in range(policy.window):
            policy.verified(policy.proposal_length(), 0)
        assert policy.backed_off
        cool_down(policy)
    assert dear.proposal_length() == 1
    assert free.proposal_length() == 4
    dear.verified(1, 0)  # the probe failed: the next one is no wider
    cool_down(dear)
    assert dear.proposal_length() == 1
