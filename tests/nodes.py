"""Real `meshdesk` processes for tests: started on free ports in their own homes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = 60.0
API_LINE = re.compile(r"API: http://127\.0\.0\.1:(\d+)/v1")


def poll(condition, timeout: float, interval: float = 0.05, message="condition"):
    """Calls `condition` until it returns something truthy, or fails after `timeout` seconds.
    `message` may be a function, to describe the state at the time of failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message() if callable(message) else message}")
        time.sleep(interval)


class NodeProcess:
    def __init__(self, process: subprocess.Popen, home: Path):
        self.process = process
        self.home = home
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read_output, daemon=True).start()
        self.port = self._await_port()

    def _read_output(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put("")

    def _await_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line == "":
                raise AssertionError(f"node exited before serving: {self.describe()}")
            match = API_LINE.search(line)
            if match:
                return int(match.group(1))
        raise AssertionError(f"node printed no API address: {self.describe()}")

    def printed(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        """The rest of the first output line starting with `prefix`, waiting for it if needed."""
        def find():
            for line in list(self.output):
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            return None
        return poll(find, timeout, message=f"a line starting {prefix!r}: {self.describe()}")

    def invite_token(self) -> str:
        return self.printed("Invite token: ")

    def peer_ids(self, state: str = "alive") -> set[str]:
        return {peer["id"] for peer in self.status()["peers"] if peer["state"] == state}

    @property
    def node_id(self) -> str:
        return self.status()["node"]["id"]

    def describe(self) -> str:
        log = self.home / "logs" / "meshdesk.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        return f"output={''.join(self.output)!r} log={tail!r}"

    def stacks(self) -> str:
        """Where a running node is stuck: every thread's stack (faulthandler on SIGUSR1), for
        the message of a test that timed out waiting for it."""
        if self.process.poll() is not None or not hasattr(signal, "SIGUSR1"):
            return ""
        before = len(self.output)
        self.process.send_signal(signal.SIGUSR1)
        poll(lambda: len(self.output) > before and "File" in "".join(self.output[before:]), 3,
             message="a stack dump")
        return "".join(self.output[before:])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def auth(self) -> dict:
        """The header that management routes (/api/*) need: the node's secret from its home."""
        return {"Authorization": f"Bearer {(self.home / 'api-token').read_text().strip()}"}

    def get_json(self, path: str) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=self.auth())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body, timeout: float = 10) -> tuple[int, dict]:
        """POSTs `body` (bytes as they are, else as JSON) with the secret: (status, answer)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method="POST",
                                         headers={"Content-Type": "application/json", **self.auth()})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def status(self) -> dict:
        return self.get_json("/api/status")

    def model_state(self) -> str | None:
        models = self.status()["models"]
        return models[0]["state"] if models else None

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        poll(lambda: self.model_state() == "ready", timeout, message="the model to be ready")

    def client(self, **options):
        import openai

        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 120)
        options.setdefault("api_key", "meshdesk")
        return openai.OpenAI(base_url=self.base_url, **options)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def meshdesk_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "meshdesk", *arguments]


def test_environment(extra: dict | None = None) -> dict:
    """This process's environment for a child; a value of None in `extra` removes that variable."""
    environment = dict(os.environ)
    environment.setdefault("QT_QPA_PLATFORM", "offscreen")
    environment["PYTHONUNBUFFERED"] = "1"
    environment.pop("MESHDESK_HOME", None)
    environment.setdefault("MESHDESK_NO_MDNS", "1")  # off the LAN unless a test turns mDNS on (tests/test_mdns.py)
    for name, value in (extra or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


def start_node(home: Path, *arguments: str, environment: dict | None = None, prefix: list[str] = (),
               node_class: type[NodeProcess] = NodeProcess) -> NodeProcess:
    """`prefix` goes before the command (`ip netns exec NAME`, tests/netns.py)."""
    # Two sequences unless a test says: the default (as many as fit, up to 8) gives each node's
    # model host ~1.5 GB of KV cache, and a suite starts dozens of nodes.
    parallel = () if "--parallel" in arguments or "--client" in arguments else ("--parallel", "2")
    command = [*prefix, *meshdesk_command("--home", str(home), "--port", "0", "--bind-host", "127.0.0.1",
                                          *parallel, *arguments)]
    if "--gui" in arguments:
        command.remove("--gui")
    else:
        command.append("--headless")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=test_environment(environment))
    return node_class(process, home)


def run_meshdesk(*arguments: str, environment: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(meshdesk_command(*arguments), capture_output=True, text=True,
                          timeout=timeout, env=test_environment(environment))
