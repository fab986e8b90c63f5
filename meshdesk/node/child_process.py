"""Supervised child processes: start, read their announcements, restart after a crash.

llama.cpp can abort its whole process (a lost RPC peer, malformed input), so everything that
loads it runs in a child. A child talks to the node with one JSON object per stdout line; its
stderr goes to a log file in the home folder. Its stdin stays open for its whole life: a child
exits when it reads EOF there, so it never outlives its node, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from meshdesk.core import launcher
from meshdesk.core.launcher import Runtime

log = logging.getLogger(__name__)

ANNOUNCEMENT_LIMIT = 64 * 1024

StartProcess = Callable[..., Awaitable[asyncio.subprocess.Process]]  # asyncio.create_subprocess_exec
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """Restart delays: doubling from `first` to `longest`, back to `first` after a long run."""

    first: float = 0.5
    longest: float = 30.0
    healthy_after: float = 60.0

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        if previous is None or ran_for >= self.healthy_after:
            return self.first
        return min(previous * 2, self.longest)


class ChildProcess:
    """One run of a child process."""

    def __init__(self, name: str, command: list[str], log_path: Path,
                 start_process: StartProcess = asyncio.create_subprocess_exec):
        self.name = name
        self.command = command
        self.log_path = log_path
        self.start_process = start_process  # injected so tests can stand in for the OS
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = await self.start_process(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                limit=ANNOUNCEMENT_LIMIT,
                env=child_environment(),
            )
        log.info("started %s (pid %d)", self.name, self.process.pid)

    async def next_announcement(self) -> dict | None:
        """The next JSON line the child printed; None once its stdout has closed."""
        while True:
            try:
                line = await self.process.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.warning("%s printed an overlong line; ignored", self.name)
                continue
            if not line:
                return None
            announcement = parse_announcement(line)
            if announcement is not None:
                return announcement

    async def wait(self) -> int:
        """Waits for the exit, logging what the child still prints (a full pipe would block it)."""
        drain = asyncio.ensure_future(self._log_output())
        code = await self.process.wait()
        drain.cancel()
        return code

    async def _log_output(self) -> None:
        while chunk := await self.process.stdout.read(65536):
            log.debug("%s: %s", self.name, chunk.decode(errors="replace").rstrip())

    async def stop(self, grace_seconds: float = 3.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), grace_seconds)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()


def parse_announcement(line: bytes) -> dict | None:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


@functools.cache
def this_runtime() -> Runtime:
    """This program as core.launcher sees it: its executable, whether it is frozen, and how
    meshdesk was installed (Briefcase writes `briefcase` into the bundle's dist-info)."""
    try:
        installer = (importlib.metadata.distribution(launcher.APP_MODULE).read_text("INSTALLER") or "").strip()
    except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        installer = ""
    return Runtime(sys.executable, bool(getattr(sys, "frozen", False)), installer or None)


def python_module_command(module: str, *arguments: str) -> list[str]:
    """`python -m module ...` from a checkout; `LAUNCHER --child module ...` in a bundle."""
    return launcher.child_command(this_runtime(), module, *arguments)


def app_command(*arguments: str) -> list[str]:
    """The command that starts MeshDesk itself with these arguments."""
    return launcher.app_command(this_runtime(), *arguments)


OnStart = Callable[[ChildProcess], Awaitable[bool]]
OnExit = Callable[[int], None]


async def supervise(
    make_child: Callable[[], ChildProcess],
    on_start: OnStart,
    on_exit: OnExit,
    backoff: Backoff = Backoff(),
    clock: Callable[[], float] = None,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Run a child again and again until cancelled.

    `on_start` gets each new child, reads what it announces and returns False when the child
    failed in a way a restart will not fix (e.g. a model file llama.cpp rejects); supervision
    then ends. `on_exit` hears every exit code.
    """
    clock = clock or asyncio.get_running_loop().time
    delay = None
    while True:
        child = make_child()
        started_at = clock()
        try:
            await child.start()
            worth_restarting = await on_start(child)
            code = await child.wait()
        finally:
            await asyncio.shield(child.stop())
        on_exit(code)
        if not worth_restarting:
            return
        delay = backoff.next_delay(delay, clock() - started_at)
        log.warning("%s exited with %s; restarting in %.1f s", child.name, code, delay)
        await sleep(delay)
