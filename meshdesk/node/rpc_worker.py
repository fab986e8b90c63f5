"""The node's side of its rpc worker child: llama.cpp's RPC server for this machine's CPU."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from meshdesk.node.child_process import ChildProcess, Sleep, StartProcess, supervise

log = logging.getLogger(__name__)

READY_SECONDS = 20.0  # a worker starts in about a second; one silent this long is stuck, and restarted


class RpcWorker:
    """Keeps the rpc worker running while this node offers capacity; knows its port."""

    def __init__(self, command: list[str], log_path: Path,
                 start_process: StartProcess = asyncio.create_subprocess_exec, sleep: Sleep = asyncio.sleep,
                 on_ready: Callable[[int | None], None] = lambda gpu_memory_bytes: None,
                 ready_seconds: float = READY_SECONDS):
        self.command = command
        self.ready_seconds = ready_seconds
        self.log_path = log_path
        self.start_process = start_process
        self.sleep = sleep
        self.port: int | None = None
        self.pid: int | None = None
        self.error: str | None = None
        self.devices: list[str] = []
        self.gpu_memory_bytes: int | None = None  # set where llama.cpp drives a GPU
        self.on_ready = on_ready  # called with gpu_memory_bytes each time a worker is ready

    @property
    def endpoint(self) -> str | None:
        return None if self.port is None else f"127.0.0.1:{self.port}"

    async def run(self) -> None:
        await supervise(self._make_child, self._await_ready, self._exited, sleep=self.sleep)

    def _make_child(self) -> ChildProcess:
        return ChildProcess("rpc worker", self.command, self.log_path, self.start_process)

    async def _await_ready(self, child: ChildProcess) -> bool:
        try:
            async with asyncio.timeout(self.ready_seconds):
                return await self._read_announcements(child)
        except TimeoutError:  # seen under load in the tests: a child that never announces
            log.warning("rpc worker (pid %s) did not start within %.0f s; its stacks go to its log, "
                        "and it is restarted", child.process.pid, self.ready_seconds)
            dump_stacks(child.process)
            await child.stop()
            return True

    async def _read_announcements(self, child: ChildProcess) -> bool:
        while (announcement := await child.next_announcement()) is not None:
            if announcement.get("event") == "ready" and isinstance(announcement.get("port"), int):
                self.port, self.pid, self.error = announcement["port"], child.process.pid, None
                self._note_devices(announcement)
                self.on_ready(self.gpu_memory_bytes)
                return True
            if announcement.get("event") == "failed":
                self.error = str(announcement.get("message"))
                return False
        return True

    def _note_devices(self, announcement: dict) -> None:
        devices = announcement.get("devices")
        self.devices = [str(name) for name in devices] if isinstance(devices, list) else []
        memory = announcement.get("gpu_memory_bytes")
        self.gpu_memory_bytes = memory if isinstance(memory, int) and memory > 0 else None

    def _exited(self, code: int) -> None:
        self.port = self.pid = None
        log.warning("rpc worker exited with code %s", code)


def dump_stacks(process) -> None:
    """Asks a stuck child to write its threads' stacks to its log (it registers SIGUSR1)."""
    try:
        process.send_signal(signal.SIGUSR1)
    except (AttributeError, ProcessLookupError, OSError):
        pass
