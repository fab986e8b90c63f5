"""An answer that survives losing its host: the gateway carries it on elsewhere.

`resumed` wraps the gateway's generation of one request (the node it came in through). When
the host is lost mid-answer (`HostLost`: the api link to it broke, its model host child exited,
or it said its model went away, as when a split member under it died), the text streamed so
far is kept, and as soon as the plans route the model again the same answer goes on as a
continuation (`core.continuation`) on whichever host they pick, never the node that went away.
Between tries it waits for the node's next change (a re-plan, a model host's state) or
`RETRY_SECONDS`, at most `RESUME_SECONDS` after the loss; then the stream ends with an error.

An answer under a grammar (a forced tool call, JSON by `response_format`) is carried on only
if nothing of it has streamed yet (then it simply starts again on the new host): another host
could not go on from its text, since the grammar would start over at the first character.

Only a lost host is carried on. A request the plans never routed (unknown, still loading) fails
at once as before; a client's mistake and a failure of the model itself are not retried; a
client going away cancels everything.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable

from meshdesk.core.continuation import Progress, continuation
from meshdesk.core.openai_api import GenerationRequest
from meshdesk.node.interfaces import HostLost, ModelUnavailable, UnknownModel

log = logging.getLogger(__name__)

RESUME_SECONDS = 60.0  # from losing the host to giving the answer up
RESUME_SECONDS_ENV = "MESHDESK_RESUME_SECONDS"  # another bound, for tests
RETRY_SECONDS = 0.5    # a remote host's own reloading is not a change this node hears of

_GRAMMAR_LOST = ("the host of {model} was lost mid-answer ({error}); an answer under a grammar (a forced "
                 "tool call or JSON) cannot be carried on from its text by another host: ask again")

# (request, node ids not to send it to) -> the events of one try
Attempt = Callable[[GenerationRequest, frozenset[str]], AsyncIterator[dict]]


def resume_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(RESUME_SECONDS_ENV, RESUME_SECONDS)))
    except ValueError:
        return RESUME_SECONDS


class Changes:
    """Set by the node whenever its plans or model hosts may have changed."""

    def __init__(self):
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.event.set()

    async def wait(self, timeout: float) -> None:
        try:  # not wait_for: on 3.11 it can swallow a cancellation that races the event
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            pass
        self.event.clear()


async def cut_when(events: AsyncIterator[dict], gone: asyncio.Event,
                   lost: Callable[[], Exception]) -> AsyncIterator[dict]:
    """`events` until `gone` is set, then `lost()` is raised: a host that left the mesh without
    its link breaking (a machine lost, a network cut) must not hold the answer until TCP gives up.
    The generation underneath is closed either way."""
    gone_wait = asyncio.ensure_future(gone.wait())
    step: asyncio.Future | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait({step, gone_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise lost()
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        gone_wait.cancel()
        if step is not None and not step.done():
            step.cancel()
            await asyncio.gather(step, return_exceptions=True)
        await events.aclose()


async def resumed(request: GenerationRequest, attempt: Attempt, changes: Changes,
                  bound: float | None = None, clock: Callable[[], float] | None = None,
                  ) -> AsyncIterator[dict]:
    """The events of one answer, carried on across lost hosts (see the module)."""
    clock = clock or asyncio.get_running_loop().time
    bound = resume_seconds() if bound is None else bound
    progress, avoid = Progress(), set()
    lost: HostLost | None = None
    deadline = 0.0
    while True:
        changes.event.clear()  # what changes from here on may make the next try work
        try:
            async for event in attempt(request if lost is None else continuation(request, progress.text),
                                       frozenset(avoid)):
                progress.saw(event)
                yield event
                if event.get("type") in ("finish", "error"):
                    return
            return
        except HostLost as error:
            if request.grammar_needed and progress.text:
                raise ModelUnavailable(_GRAMMAR_LOST.format(model=request.model, error=error)) from None
            if lost is None:  # one bound for the whole answer, however often its host is lost
                deadline = clock() + bound
            lost = error
            progress.losses += 1
            if error.node_gone and error.host_id is not None:
                avoid.add(error.host_id)
            log.warning("lost the host of %s mid-answer (%s); carrying it on after %d characters",
                        request.model, error, len(progress.text))
            left = deadline - clock()
            if left <= 0:
                raise ModelUnavailable(f"the host of {request.model} was lost mid-answer ({error}) and no "
                                       f"node could carry the answer on within {bound:g} s") from None
            if progress.losses > 1:  # lost again: a crash loop must not spin, so wait for a change
                await changes.wait(min(RETRY_SECONDS, left))
            continue  # the first time at once: another host may already be routed
        except (ModelUnavailable, UnknownModel) as error:
            if lost is None:
                raise  # never started: the client hears why, as before
            left = deadline - clock()
            if left <= 0:
                raise ModelUnavailable(f"the host of {request.model} was lost mid-answer ({lost}) and no "
                                       f"node could carry the answer on within {bound:g} s: {error}") from None
            await changes.wait(min(RETRY_SECONDS, left))
