"""Turns for a model host's parallel sequences: up to `parallel` answers at once, the rest waiting
in arrival order, and a full queue turning the next one away at once (`ModelBusy`, a 429) rather
than letting it wait without end."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from meshdesk.core.parallel import most_waiting, retry_after_seconds
from meshdesk.node.interfaces import ModelBusy

RECENT_WEIGHT = 0.2  # how much the latest answer moves the average answer time


class Admission:
    def __init__(self, parallel: int = 1, waiting_bound: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.parallel = parallel
        self.waiting_bound = waiting_bound  # None: `core.parallel.most_waiting(parallel)`
        self.active = 0
        self.waiting: deque[asyncio.Future] = deque()
        self.answer_seconds: float | None = None
        self.clock = clock

    @property
    def bound(self) -> int:
        return most_waiting(self.parallel) if self.waiting_bound is None else self.waiting_bound

    def set_parallel(self, parallel: int) -> None:
        """The child's ready line says how many it decodes at once; more may start now."""
        self.parallel = max(1, parallel)
        self._wake()

    @contextlib.asynccontextmanager
    async def turn(self, on_change: Callable[[], None] = lambda: None) -> AsyncIterator[None]:
        await self._enter(on_change)
        started = self.clock()
        try:
            on_change()  # inside: a listener that raises must not keep the turn
            yield
        finally:
            self._record(self.clock() - started)
            self.active -= 1
            self._wake()
            on_change()

    async def _enter(self, on_change: Callable[[], None]) -> None:
        if self.active < self.parallel and not self.waiting:
            self.active += 1
            return
        if len(self.waiting) >= self.bound:
            raise ModelBusy(f"all {self.parallel} of this model's sequences are answering and "
                            f"{len(self.waiting)} requests are waiting; try again shortly",
                            retry_after_seconds(self.answer_seconds, len(self.waiting), self.parallel))
        place = asyncio.get_running_loop().create_future()
        self.waiting.append(place)
        try:
            on_change()
            await place
        except BaseException:  # its client left (cancelled), or the listener raised
            self._give_up(place)
            with contextlib.suppress(Exception):
                on_change()
            raise

    def _give_up(self, place: asyncio.Future) -> None:
        """A waiter went away (its client disconnected): its place is free; a turn it was already
        given passes to the next in line."""
        if place in self.waiting:
            self.waiting.remove(place)
        elif place.done() and not place.cancelled():
            self.active -= 1
            self._wake()

    def _wake(self) -> None:
        while self.waiting and self.active < self.parallel:
            place = self.waiting.popleft()
            if not place.done():
                self.active += 1
                place.set_result(None)

    def _record(self, seconds: float) -> None:
        previous = self.answer_seconds
        self.answer_seconds = seconds if previous is None else previous + RECENT_WEIGHT * (seconds - previous)
