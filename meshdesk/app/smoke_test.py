"""`meshdesk --smoke-test [REPORT]`: what an installed app must do, checked by the app itself.

The installers workflow runs it on the installed DMG and MSI (.github/workflows/installers.yml),
where nobody looks at a window. Each check is one line of the report; the exit code is 0 only
when all pass:

- llama.cpp loads and has its RPC backend (split inference needs it);
- Qt starts (offscreen: CI machines have no display) in a child, through the bundle's launcher;
- a headless node, a child started as the app starts its children, serves the default model:
  one chat completion over its API on 127.0.0.1;
- on Windows, the meshdesk:// handler is written (the uninstaller must remove it).

The report goes to stdout and, given a path, to that file too: on Windows the app is a GUI
program whose output a console never sees.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

NODE_TIMEOUT = 300.0  # a cold CI machine: first start links the model and loads llama.cpp
API_LINE = re.compile(r"API: http://127\.0\.0\.1:(\d+)/v1")
QUESTION = "Say hi."


def check_llama() -> str:
    import llama_cpp

    if not llama_cpp.llama_supports_rpc():
        raise RuntimeError("llama.cpp has no RPC backend")
    return f"llama-cpp-python {llama_cpp.__version__} with RPC"


def check_qt() -> str:
    from meshdesk.adapters.qt_probe import probe
    from meshdesk.core.qt_libraries import headless_hint
    from meshdesk.node.child_process import child_environment, python_module_command

    command = python_module_command("meshdesk.adapters.qt_probe")
    environment = {**child_environment(), "QT_QPA_PLATFORM": "offscreen"}
    failure = probe(command, environment=environment)
    if failure is not None:
        raise RuntimeError(headless_hint(failure))
    return "Qt starts (offscreen)"


def read_port(process: subprocess.Popen, deadline: float) -> int:
    found: list[int] = []
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if not found and (match := API_LINE.search(line)):
                found.append(int(match.group(1)))

    threading.Thread(target=read, daemon=True).start()
    while not found:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the node printed no API address: " + "".join(lines)[-500:])
        time.sleep(0.1)
    return found[0]


def ask(port: int, deadline: float) -> str:
    """One chat completion, retried while the model loads (503) until the deadline."""
    body = json.dumps({"model": "default", "max_tokens": 16, "temperature": 0,
                       "messages": [{"role": "user", "content": QUESTION}]}).encode()
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"]
        except OSError as error:  # urllib's HTTPError and URLError are OSErrors
            if time.monotonic() > deadline:
                raise RuntimeError(f"no chat completion: {error}") from None
            time.sleep(1.0)


def check_node() -> str:
    from meshdesk.node.child_process import app_command, child_environment

    with tempfile.TemporaryDirectory(prefix="meshdesk-smoke-") as home:
        command = app_command("--headless", "--home", home, "--port", "0", "--bind-host", "127.0.0.1")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   stdin=subprocess.DEVNULL, env=child_environment())
        try:
            deadline = time.monotonic() + NODE_TIMEOUT
            answer = ask(read_port(process, deadline), deadline)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if not answer.strip():
        raise RuntimeError("the default model answered with nothing")
    return f"a headless node answered {QUESTION!r} with {answer.strip()[:60]!r}"


def check_windows_links() -> str:
    from meshdesk.app.link_handlers import register_windows_links

    if not register_windows_links():
        raise RuntimeError("could not write HKCU\\Software\\Classes\\meshdesk")
    return "meshdesk:// handler registered"


def checks() -> list:
    found = [check_llama, check_qt, check_node]
    return found + [check_windows_links] if sys.platform == "win32" else found


def run_smoke_test(report: str | None = None) -> int:
    lines, failed = [], 0
    for check in checks():
        name = check.__name__.removeprefix("check_")
        try:
            lines.append(f"ok   {name}: {check()}")
        except Exception as error:  # noqa: BLE001 (every failure is a line of the report)
            lines.append(f"FAIL {name}: {error}")
            failed += 1
        print(lines[-1], flush=True)
    lines.append("smoke test passed" if not failed else f"smoke test FAILED: {failed} of {len(lines)} checks")
    print(lines[-1], flush=True)
    if report and report != "-":
        Path(report).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0 if not failed else 1
