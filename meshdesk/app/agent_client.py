"""For `meshdesk run`: the node an agent talks to. The one running for the home, else a lite
client started for the run (`--client`: no model, only the API and the mesh this home belongs
to), stopped when the agent exits; then the wait for a model the mesh serves."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from meshdesk.app.command_line import CommandFailed
from meshdesk.app.home import Home
from meshdesk.app.running_node import RunningNode, running_node
from meshdesk.app.runtime import RUNTIME_FILE
from meshdesk.core.agents import ServedModel, ready_models
from meshdesk.core.status import SnapshotError, StatusSnapshot
from meshdesk.node.child_process import app_command

CLIENT_START_SECONDS = 60.0
STOP_SECONDS = 15.0
POLL_SECONDS = 0.25
REPORT_EVERY_SECONDS = 10.0
CLIENT_LOG = "agent-client.log"
# Windows: the console's Ctrl+C reaches a process group; the client's own one keeps it for the agent
NEW_PROCESS_GROUP = subprocess.CREATE_NEW_PROCESS_GROUP if sys.platform == "win32" else 0


def say(line: str) -> None:
    sys.stderr.write(f"meshdesk run: {line}\n")
    sys.stderr.flush()


@dataclass
class LiteClient:
    """A `meshdesk --client` child of this process, in its own session so that the terminal's
    Ctrl+C reaches the agent only; stopped with SIGTERM (as a service manager would), and by
    itself when its stdin, a pipe only this process holds, closes: when `meshdesk run` dies
    however it dies (a closed terminal, SIGKILL), the client does not outlive it."""

    process: subprocess.Popen
    log_path: Path
    api_key: str

    @classmethod
    def start(cls, home: Home, join: list[str]) -> LiteClient:
        home.prepare()
        api_key = secrets.token_urlsafe(24)  # the /v1 API of this run's client: the agent's alone
        command = app_command("--client", "--headless", "--home", str(home.root),
                              "--port", "0", "--exit-with-stdin")
        for token in join:
            command += ["--join", token]
        environment = {**os.environ, "MESHDESK_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
        log_path = home.logs / CLIENT_LOG
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                       env=environment, start_new_session=(os.name == "posix"),
                                       creationflags=NEW_PROCESS_GROUP)
        return cls(process, log_path, api_key)

    def wait_for_api(self, home: Home, timeout: float = CLIENT_START_SECONDS) -> RunningNode:
        """Until the client wrote its runtime file and answers /api/status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CommandFailed(f"the lite client stopped (exit code {self.process.returncode}): "
                                    f"{self.log_tail()}")
            if self._runtime_pid(home) == self.process.pid:
                node = running_node(home)
                if node is not None:
                    return node
            time.sleep(POLL_SECONDS)
        raise CommandFailed(f"the lite client did not start within {timeout:.0f} s; see {self.log_path}")

    @staticmethod
    def _runtime_pid(home: Home) -> int | None:
        try:
            return int(json.loads((home.root / RUNTIME_FILE).read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(text[-lines:]) or "no output"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()


def node_for_run(home: Home, join: list[str]) -> tuple[RunningNode, LiteClient | None]:
    """The running node of `home`, or a lite client started now (the caller stops it)."""
    node = running_node(home)
    if node is not None:
        if join:
            say(f"a node already runs for {home.root}: using it as it is (--join is not applied)")
        return node, None
    say(f"no MeshDesk node runs for {home.root}; starting a lite client for this run")
    client = LiteClient.start(home, join)
    try:
        return client.wait_for_api(home), client
    except BaseException:
        client.stop()
        raise


def status_of(node: RunningNode) -> StatusSnapshot | None:
    try:
        return StatusSnapshot.from_wire(node.request("/api/status", timeout=5))
    except (CommandFailed, OSError, SnapshotError, ValueError):
        return None


def waiting_reason(status: StatusSnapshot | None) -> str:
    if status is None:
        return "the node does not answer"
    if not status.models:
        alive = sum(1 for peer in status.peers if peer.state == "alive")
        return f"no model is served yet ({alive} other member(s) of the mesh seen)"
    return "; ".join(f"{model.id} is {model.state}" + (f" ({model.error})" if model.error else "")
                     for model in status.models)


def wait_for_models(node: RunningNode, wanted: str | None, timeout: float,
                    client: LiteClient | None = None) -> tuple[list[ServedModel], StatusSnapshot]:
    """The models the node can answer with, once there is one (or `wanted`, when named)."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic()
    while True:
        status = status_of(node)
        models = ready_models(status) if status is not None else []
        if models and (wanted is None or any(model.id == wanted for model in models)):
            return models, status
        now = time.monotonic()
        if client is not None and client.process.poll() is not None:
            raise CommandFailed(f"the lite client stopped: {client.log_tail()}")
        if now >= deadline:
            what = f"the model {wanted} was not" if wanted else "no model was"
            served = ", ".join(model.id for model in models) or "none"
            raise CommandFailed(f"{what} ready within {timeout:.0f} s (served now: {served}; "
                                f"{waiting_reason(status)}); raise --wait, or start a node that serves it")
        if now >= next_report:
            say(f"waiting up to {deadline - now:.0f} s for {'the model ' + wanted if wanted else 'a served model'}: "
                f"{waiting_reason(status)}")
            next_report = now + REPORT_EVERY_SECONDS
        time.sleep(POLL_SECONDS)


def v1_key_works(node: RunningNode, key: str | None) -> bool:
    """Whether the node's /v1 API takes `key` (None: no key at all); False on a 401."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}/v1/models", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5):
            return True
    except urllib.error.HTTPError as error:
        if error.code == 401:
            return False
        raise CommandFailed(f"the node's /v1/models answered {error.code}") from None
    except OSError as error:
        raise CommandFailed(f"cannot reach the node's API on port {node.port}: {error}") from None


def local_sizes(status: StatusSnapshot) -> dict[str, int]:
    sizes = {}
    for model in status.models:
        try:
            sizes[model.id] = Path(model.path).stat().st_size if model.path else 0
        except OSError:
            pass
    return sizes
