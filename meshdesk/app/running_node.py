"""Talking to the node running for a home: the API port it wrote to `runtime.json`, and the
local secret in HOME/api-token that its management routes (/api/*) ask for."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from meshdesk.adapters.api_token import read_token, token_path
from meshdesk.app.command_line import CommandFailed
from meshdesk.app.home import Home
from meshdesk.app.runtime import RUNTIME_FILE


class NodeRefused(CommandFailed):
    """The node answered with an error; str() is its message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RunningNode:
    port: int
    token: str

    def request(self, path: str, body: dict | None = None, timeout: float = 10) -> dict:
        """GET `path`, or POST `body` as JSON; an error answer raises CommandFailed with its message."""
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers,
                                         method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise NodeRefused(error.code, error_message(error)) from None

    def post(self, path: str, body: dict) -> dict:
        return self.request(path, body)


def error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"the node answered {error.code} {error.reason}"


def running_node(home: Home) -> RunningNode | None:
    """The node running for `home`, or None when none answers. A node that answers but refuses
    this home's secret raises CommandFailed: it runs, so acting offline would be wrong."""
    try:
        runtime = json.loads((home.root / RUNTIME_FILE).read_text())
        port = int(runtime["api_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    token = read_token(home.root)
    if token is None:
        return None  # a running node keeps the file; without one, no node runs for this home
    node = RunningNode(port, token)
    try:
        node.request("/api/status", timeout=3)
    except NodeRefused as refusal:
        if refusal.status != 401:
            return None  # not a MeshDesk node of this version: something else took the port
        raise CommandFailed(f"the node on port {port} refused the secret in {token_path(home.root)} "
                            f"({refusal}); restart it to share a new one") from None
    except (OSError, ValueError):
        return None
    return node
