"""The node's side of a model host child: its state, and generations sent to it, as many at once
as the child decodes together (its ready line's "parallel"), the rest waiting their turn
(`node.admission`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from meshdesk.core.openai_api import GenerationRequest
from meshdesk.core.states import ModelState
from meshdesk.node.admission import Admission
from meshdesk.node.child_process import Backoff, ChildProcess, Sleep, StartProcess, supervise
from meshdesk.node.interfaces import HostLost, ModelStatus, ModelUnavailable

log = logging.getLogger(__name__)

LOADING, READY, FAILED = ModelState.LOADING, ModelState.READY, ModelState.FAILED
EVENT_LINE_LIMIT = 16 * 1024 * 1024


COUNTS = ("proposed", "accepted", "steps", "generated", "backed_off")
MODES = ("draft", "ngram", "off")


class SpeculationTotals:
    """Speculative decoding counts from the host's finish events, added up since it started, and
    for a split model the tunnel's round trips during those generations (`tokens_per_round_trip`:
    what speculation is for on a slow link)."""

    def __init__(self):
        self.mode = "off"
        self.draft: str | None = None
        self.draft_max: int | None = None
        self.ngram_max: int | None = None
        self.draft_error: str | None = None
        self.counts = dict.fromkeys(COUNTS, 0)
        self.round_trips = 0
        self.round_trip_tokens = 0  # tokens generated while those round trips were counted
        self.split = False

    def announced(self, ready: dict) -> None:
        """The host's ready line says what speculates and names its draft (or why the draft it
        was given is not running)."""
        draft, draft_max, error = ready.get("draft"), ready.get("draft_max"), ready.get("draft_error")
        self.draft = draft if isinstance(draft, str) else None
        self.draft_max = draft_max if isinstance(draft_max, int) else None
        self.ngram_max = ready.get("ngram_max") if isinstance(ready.get("ngram_max"), int) else None
        self.draft_error = error if isinstance(error, str) else None
        mode = ready.get("speculation")
        self.mode = mode if mode in MODES else ("draft" if self.draft else "off")

    def add(self, counts) -> None:
        if not isinstance(counts, dict):
            return
        for name in COUNTS:
            value = counts.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self.counts[name] += value

    def add_round_trips(self, round_trips: int, tokens) -> None:
        """A generation of a split model took `round_trips` and gave `tokens` tokens."""
        self.split = True
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 and round_trips >= 0:
            self.round_trips += round_trips
            self.round_trip_tokens += tokens

    def summary(self) -> dict | None:
        error = {"error": self.draft_error} if self.draft_error else {}
        if self.mode == "off":
            return error or None
        proposed, accepted = self.counts["proposed"], self.counts["accepted"]
        steps, generated = self.counts["steps"], self.counts["generated"]
        lengths = {"draft_max": self.draft_max} if self.mode == "draft" else {"ngram_max": self.ngram_max}
        return {
            **self.counts,
            "mode": self.mode,
            **lengths,
            "acceptance_rate": round(accepted / proposed, 4) if proposed else None,
            "tokens_per_step": round(generated / steps, 3) if steps else None,
            "tokens_per_round_trip": (round(self.round_trip_tokens / self.round_trips, 3)
                                      if self.split and self.round_trips else None),
            **error,
        }


class ModelHost:
    """Keeps one model host child running and feeds it generations: up to its parallel
    sequences at once, the rest in arrival order, a full queue refused (`ModelBusy`)."""

    def __init__(
        self,
        model_id: str,
        model_path: Path,
        command: list[str],
        log_path: Path,
        backoff: Backoff = Backoff(),
        start_process: StartProcess = asyncio.create_subprocess_exec,
        sleep: Sleep = asyncio.sleep,
        round_trips: Callable[[], int] | None = None,
        waiting_bound: int | None = None,
    ):
        self.model_id = model_id
        self.model_path = model_path
        self.command = command
        self.log_path = log_path
        self.backoff = backoff
        self.start_process = start_process
        self.sleep = sleep
        self.state = LOADING
        self.error: str | None = None
        self.port: int | None = None
        self.pid: int | None = None
        self.context: int | None = None  # the child's n_ctx, from its ready line
        self.turns = Admission(waiting_bound=waiting_bound)  # parallel: 1 until the child says more
        self.requests = 0
        self.on_change: Callable[[], None] = lambda: None
        self.speculation = SpeculationTotals()
        self.round_trips = round_trips  # a split model's tunnel count (rpc_tunnel.Traffic); None solo

    def status(self) -> ModelStatus:
        return ModelStatus(self.model_id, str(self.model_path), self.state, self.error, self.pid,
                           requests=self.requests, draft=self.speculation.draft,
                           speculative=self.speculation.summary(), context=self.context,
                           generating=self.turns.active, queued=len(self.turns.waiting),
                           parallel=self.turns.parallel)

    async def run(self) -> None:
        await supervise(self._make_child, self._await_ready, self._exited, self.backoff, sleep=self.sleep)

    def _make_child(self) -> ChildProcess:
        return ChildProcess(f"model host {self.model_id}", self.command, self.log_path, self.start_process)

    async def _await_ready(self, child: ChildProcess) -> bool:
        self._set_state(LOADING)
        announcement = await child.next_announcement()
        if announcement is None:
            return True
        if announcement.get("event") == "failed":
            self._set_state(FAILED, str(announcement.get("message", "model host failed")))
            return False
        if announcement.get("event") == "ready" and isinstance(announcement.get("port"), int):
            self.port, self.pid = announcement["port"], child.process.pid
            context = announcement.get("context")
            self.context = context if isinstance(context, int) and not isinstance(context, bool) else None
            self.speculation.announced(announcement)
            self.turns.set_parallel(announced_parallel(announcement))
            self._set_state(READY)
        return True

    def _exited(self, code: int) -> None:
        self.port = self.pid = None
        if self.state != FAILED:
            log.warning("model host for %s exited with code %s", self.model_id, code)
            self._set_state(LOADING, f"model host exited with code {code}; restarting")

    def _set_state(self, state: ModelState, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.on_change()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[dict]:
        """Yields the host's events: {"type": "delta", "text"} ... {"type": "finish", ...}."""
        self._check_ready()
        last = None
        async with self.turns.turn(self.on_change):
            self._check_ready()
            reader, writer = await self._connect()
            self.requests += 1
            started = self.round_trips() if self.round_trips is not None else 0
            try:
                writer.write(json.dumps(request.to_wire()).encode("utf-8") + b"\n")
                await writer.drain()
                async with contextlib.aclosing(self._events(reader, started)) as events:
                    async for event in events:
                        if event.get("type") in ("finish", "error"):
                            last = event
                            break
                        yield event
            finally:
                writer.close()
        # The turn is given back before the last event: a caller stops reading there, and the
        # sequence must not stay taken until this generator is collected.
        if last is not None:
            yield last

    def _check_ready(self) -> None:
        if self.state == FAILED:
            raise ModelUnavailable(f"model {self.model_id} failed to load: {self.error}", 30)
        if self.state != READY:
            raise ModelUnavailable(f"model {self.model_id} is loading; try again shortly")

    async def _connect(self):
        try:
            return await asyncio.open_connection("127.0.0.1", self.port, limit=EVENT_LINE_LIMIT)
        except OSError as error:
            raise ModelUnavailable(f"model host for {self.model_id} is not reachable: {error}")

    async def _events(self, reader: asyncio.StreamReader, round_trips_before: int) -> AsyncIterator[dict]:
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError):
                line = b""
            if not line:
                raise HostLost(f"model host for {self.model_id} stopped mid-answer")
            event = json.loads(line)
            if event.get("type") == "finish":
                self.speculation.add(event.get("speculative"))
                if self.round_trips is not None:
                    self.speculation.add_round_trips(self.round_trips() - round_trips_before,
                                                     generated_here(event))
            yield event
            if event.get("type") in ("finish", "error"):
                return


def announced_parallel(ready: dict) -> int:
    """The sequences the child decodes at once: 1 from a child that does not say (one at a time)."""
    parallel = ready.get("parallel")
    return parallel if isinstance(parallel, int) and not isinstance(parallel, bool) and parallel >= 1 else 1


def generated_here(finish: dict) -> int | None:
    """The tokens this host generated for a finish event: its speculation's passes' tokens and
    the prompt pass's one (not `usage`, which counts an answer carried on from a lost host)."""
    counts = finish.get("speculative")
    generated = counts.get("generated") if isinstance(counts, dict) else None
    if not isinstance(generated, int) or isinstance(generated, bool) or generated < 0:
        return None
    return generated + 1
