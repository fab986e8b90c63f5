"""Turns for a model host's sequences (`node.admission`) and the default from memory
(`core.parallel`): FIFO beyond the cap, a cancelled waiter's place freed, a full queue refused."""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.core.parallel import default_parallel, most_waiting, retry_after_seconds
from meshdesk.node.admission import Admission
from meshdesk.node.interfaces import ModelBusy

GIB = 1 << 30


async def holding(turns: Admission, release: asyncio.Event, count: int) -> list[asyncio.Task]:
    """`count` answers that keep their turns until `release`; returns once all but one wait."""
    async def answer():
        async with turns.turn():
            await release.wait()
    tasks = [asyncio.create_task(answer()) for _ in range(count)]
    while len(turns.waiting) < count - 1:
        await asyncio.sleep(0)
    return tasks


def test_the_default_is_as_many_sequences_as_fit_beside_the_weights_up_to_eight():
    # 1 GB of weights (1.1 GB counted), 1 MB of KV per token x 1024 tokens = 1 GiB per sequence
    assert default_parallel(int(4.2 * GIB), GIB, 1 << 20, 1024) == 3
    assert default_parallel(200 * GIB, GIB, 1 << 20, 1024) == 8
    assert default_parallel(GIB, GIB, 1 << 20, 1024) == 1  # nothing spare: still one
    assert default_parallel(200 * GIB, GIB, None, 1024) == 1  # KV size unknown: nothing says more fit


def test_a_turned_away_client_waits_about_as_long_as_the_queue_ahead_takes():
    assert retry_after_seconds(None, 0, 1) == 1
    assert retry_after_seconds(3.0, 7, 2) == 12  # 8 ahead, 2 at a time, 3 s each
    assert retry_after_seconds(500.0, 40, 1) == 60
    assert most_waiting(8) == 32


def run(coroutine):
    return asyncio.run(coroutine)


def test_beyond_the_cap_answers_start_in_arrival_order():
    async def scenario():
        turns, order = Admission(parallel=2), []
        release = asyncio.Event()

        async def answer(name):
            async with turns.turn():
                order.append(name)
                await release.wait()
        tasks = []
        for name in "abcde":
            tasks.append(asyncio.create_task(answer(name)))
            await asyncio.sleep(0)  # each arrives before the next
        while len(order) < 2:
            await asyncio.sleep(0)
        assert order == ["a", "b"] and turns.active == 2 and len(turns.waiting) == 3
        release.set()
        await asyncio.gather(*tasks)
        return order
    assert run(scenario()) == list("abcde")


def test_a_full_queue_refuses_at_once_with_a_retry_after():
    async def scenario():
        turns, release = Admission(parallel=1, waiting_bound=2), asyncio.Event()

        tasks = await holding(turns, release, 3)
        with pytest.raises(ModelBusy) as refused:
            async with turns.turn():
                pass
        release.set()
        await asyncio.gather(*tasks)
        return refused.value, turns
    refused, turns = run(scenario())
    assert refused.retry_after >= 1 and "2 requests are waiting" in str(refused)
    assert turns.active == 0 and not turns.waiting


def test_a_waiter_that_gives_up_frees_its_place_and_the_next_goes_in_its_stead():
    async def scenario():
        turns, release, started = Admission(parallel=1, waiting_bound=2), asyncio.Event(), []

        async def answer(name):
            async with turns.turn():
                started.append(name)
                await release.wait()
        first = asyncio.create_task(answer("first"))
        quitter = asyncio.create_task(answer("quitter"))
        patient = asyncio.create_task(answer("patient"))
        while len(turns.waiting) < 2:
            await asyncio.sleep(0)
        quitter.cancel()
        await asyncio.gather(quitter, return_exceptions=True)
        assert len(turns.waiting) == 1  # room for another again
        release.set()
        await asyncio.gather(first, patient)
        return started, turns
    started, turns = run(scenario())
    assert started == ["first", "patient"] and turns.active == 0


def test_more_sequences_announced_let_waiters_in():
    async def scenario():
        turns, release = Admission(parallel=1), asyncio.Event()

        tasks = await holding(turns, release, 3)
        turns.set_parallel(3)
        active = turns.active
        release.set()
        await asyncio.gather(*tasks)
        return active
    assert run(scenario()) == 3


def test_a_listener_that_raises_keeps_no_turn_and_no_place():
    async def scenario():
        turns = Admission(parallel=1, waiting_bound=4)

        def broken():
            raise RuntimeError("a status listener's bug")
        with pytest.raises(RuntimeError):
            async with turns.turn(broken):
                pass
        assert turns.active == 0
        async with turns.turn():  # someone holds the one sequence; the next waits with a broken listener
            with pytest.raises(RuntimeError):
                async with turns.turn(broken):
                    pass
            assert len(turns.waiting) == 0
        return turns.active
    assert run(scenario()) == 0
