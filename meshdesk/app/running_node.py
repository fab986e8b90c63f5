"""Talking to the node running for a home, through the API port it wrote to `runtime.json`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from meshdesk.app.command_line import CommandFailed
from meshdesk.app.home import Home
from meshdesk.app.runtime import RUNTIME_FILE


def running_api_port(home: Home) -> int | None:
    try:
        runtime = json.loads((home.root / RUNTIME_FILE).read_text())
        port = int(runtime["api_port"])
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=3).close()
        return port
    except (OSError, ValueError, KeyError, TypeError):
        return None


def post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise CommandFailed(json.loads(error.read())["error"]["message"]) from None
