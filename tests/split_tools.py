"""Direct llama.cpp RPC without MeshDesk in between, and peeks at processes' sockets (Linux)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from meshdesk.app.assembly import model_context
from meshdesk.core.openai_api import parse_completion_request
from tests.nodes import poll


class Child:
    """A llama adapter child process: waits for its ready line, keeps draining its output."""

    def __init__(self, module: str, *arguments: str):
        self.errors = tempfile.TemporaryFile(mode="w+")  # where a stuck child writes its stacks
        self.process = subprocess.Popen([sys.executable, "-m", module, *arguments], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.errors, text=True)
        self.ready: dict | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{") and self.ready is None:
                self.ready = json.loads(line)

    def port(self, timeout: float = 60) -> int:
        poll(lambda: self.ready is not None or self.process.poll() is not None, timeout,
             message="the child to be ready")
        assert self.ready and self.ready.get("event") == "ready", self.ready
        return self.ready["port"]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.errors.close()

    def stacks(self) -> str:
        """Asks the child for its threads' stacks (an rpc worker registers SIGUSR1) and reads them."""
        self.process.send_signal(signal.SIGUSR1)
        poll(lambda: os.fstat(self.errors.fileno()).st_size, 5, message="the stacks")
        self.errors.seek(0)
        return self.errors.read()


def rpc_worker(attempts: int = 3, ready_seconds: float = 20) -> tuple[Child, int]:
    """A direct rpc worker and its port. Rarely, under load, one never announces (as the node's
    own supervisor sees too, node/rpc_worker.py): it is asked for its stacks and started again."""
    for attempt in range(attempts):
        worker = Child("meshdesk.adapters.llama.rpc_worker", "--threads", "1")
        try:
            return worker, worker.port(ready_seconds)
        except AssertionError:
            if attempt == attempts - 1:
                raise
            print(f"a direct rpc worker did not start within {ready_seconds} s; its stacks:\n{worker.stacks()}")
            worker.stop()
    raise AssertionError("unreachable")


def direct_rpc_completion(model: Path, shares: list[float], prompt: str, max_tokens: int) -> str:
    """The same split as a MeshDesk plan, over plain llama.cpp RPC on loopback."""
    workers: list[Child] = []
    host = None
    try:
        endpoints = []
        for _ in shares:
            worker, port = rpc_worker()
            workers.append(worker)
            endpoints.append(f"127.0.0.1:{port}")
        # The context a node gives this model: another KV cache size changes the last bits of
        # the logits, and a greedy answer can then go another way.
        arguments = ["--model", str(model), "--threads", "1", "--context", str(model_context(model, None)),
                     "--tensor-split", ",".join(map(str, shares))]
        for endpoint in endpoints:
            arguments += ["--rpc", endpoint]
        host = Child("meshdesk.adapters.llama.host", *arguments)
        return complete(host.port(), prompt, max_tokens)
    finally:
        for child in [*workers, *([host] if host else [])]:
            child.stop()


def complete(port: int, prompt: str, max_tokens: int) -> str:
    request = parse_completion_request({"model": "m", "prompt": prompt, "max_tokens": max_tokens,
                                        "temperature": 0, "seed": 1})
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(json.dumps(request.to_wire()).encode() + b"\n")
        events = [json.loads(line) for line in connection.makefile() if line.strip()]
    assert events[-1]["type"] == "finish", events[-1]
    return "".join(event.get("text", "") for event in events)


def children(pid: int, running: str) -> list[int]:
    listed = [int(child) for listing in Path(f"/proc/{pid}/task").glob("*/children")
              for child in _read_or_empty(listing).split()]
    return [child for child in listed if running in command_line(child)]


def _read_or_empty(path: Path) -> str:
    """A thread of the process may end between the listing and the read."""
    try:
        return path.read_text()
    except OSError:
        return ""


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def listening_addresses(pid: int) -> list[str]:
    """The local addresses of the TCP sockets `pid` listens on, as hex from /proc/net/tcp*."""
    inodes = set()
    for link in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = link.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1])
    return found


def maps_library(pid: int, name: str) -> bool:
    return name in Path(f"/proc/{pid}/maps").read_text()
