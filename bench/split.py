"""What does MeshDesk cost a split model? The same two-way split, through the mesh and over direct RPC.

One run loads the same GGUF three ways and keeps all three loaded:

- **solo**: one model host (`python -m meshdesk.adapters.llama.host --model PATH`), no RPC;
- **meshdesk**: a real two-node mesh on 127.0.0.1. Node A seeds the model with `--split`; node B
  joins with its own copy (a hard link in its home's `models/`) and a lower `--max-vram`, so A
  is elected host. A's model host reaches B's rpc worker through the mesh tunnel (weights go
  as references to B's own file) and its own rpc worker last. Requests go to A's
  OpenAI-compatible API;
- **direct**: the same split without MeshDesk in between: two plain rpc workers and a model
  host with `--rpc W1 --rpc W2 --tensor-split <A's plan shares, in A's device order>`.

Then it streams the same completions from the three, interleaved (the order rotates from one
prompt to the next), one at a time.

    .venv/bin/python bench/split.py            # 3 prompts x 3 repetitions x 64 tokens
    .venv/bin/python bench/split.py --quick    # 1 repetition x 16 tokens (smoke test)

Tokens are counted the same way everywhere: streamed pieces that carry text (the model host
sends one per sampled token; the node forwards each as one SSE chunk). Tokens/s runs from the
first text piece to the last; time to first token (TTFT) from sending the request.

Exit code 0 whatever the verdicts (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.nodes import NodeProcess, meshdesk_command, test_environment  # noqa: E402

PROMPTS = (
    "Once upon a time",
    "def fibonacci(n):",
    "The history of the Roman Empire",
)
TOP_P = 1.0
SEED = 1234
TARGET_RATIO = 0.95        # meshdesk tokens/s over direct RPC tokens/s, at least
TARGET_WEIGHTS_SENT = 0.01  # weights sent over the mesh, as a share of the members' part of the model
NOISY_SPREAD = 0.10
B_MAX_VRAM_GB = 10         # B offers less than A, so A is elected host
SOLO, MESHDESK, DIRECT = "solo", "meshdesk", "direct"
SIDES = (SOLO, MESHDESK, DIRECT)
POLL_SECONDS = 0.05
# The node logs "2026-01-01 12:00:00,123 INFO meshdesk.node.child_process: started model host X (pid N)".
STARTED_HOST_LINE = re.compile(r"^(\S+ \S+) INFO meshdesk\.node\.child_process: started model host .* \(pid (\d+)\)")
# Nodes started here must not share the plaintext keyring that `keyrings.alt` would give them.
NODE_ENVIRONMENT = {"PYTHON_KEYRING_BACKEND": os.environ.get("PYTHON_KEYRING_BACKEND",
                                                             "keyring.backends.fail.Keyring")}


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: clean up and exit 1."""


@dataclass
class Run:
    side: str
    prompt: str
    repetition: int
    pieces: list[str]
    ttft: float            # seconds, request to first text piece
    stream_seconds: float  # first text piece to last
    position: int = 0      # 0, 1 or 2: where it ran in its group of three

    @property
    def chunks(self) -> int:
        return len(self.pieces)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens_per_second(self) -> float:
        if self.chunks < 2 or self.stream_seconds <= 0:
            return math.nan
        return (self.chunks - 1) / self.stream_seconds


@dataclass
class Loaded:
    """What one side took to load."""

    seconds: float                       # model host process start to ready
    notes: list[str] = field(default_factory=list)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="GGUF to benchmark (default: the bundled Gemma 3 270M, assembled "
                             "into ~/.cache/meshdesk/bench)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for every model host and rpc worker (default 1)")
    parser.add_argument("--repetitions", type=int, default=3, help="rounds over all prompts (default 3)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per completion (default 64)")
    parser.add_argument("--quick", action="store_true",
                        help="one repetition of 16 tokens (a smoke test; numbers are rough)")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for each side to load (default 180)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.repetitions, arguments.max_tokens = 1, 16
    if arguments.threads < 1 or arguments.repetitions < 1 or arguments.max_tokens < 2:
        parser.error("--threads and --repetitions must be >= 1, --max-tokens >= 2")
    return arguments


def bundled_model() -> Path:
    """The bundled Gemma 3 270M, assembled once into ~/.cache/meshdesk/bench."""
    from meshdesk.adapters.bundled_model import install_bundled_model

    return install_bundled_model(Path.home() / ".cache" / "meshdesk" / "bench")


# --- llama.cpp children started directly ---------------------------------------------------------


class Child:
    """A model host or rpc worker child, run the way a node runs it.

    Its stdin stays open (it exits on EOF there), its stdout is drained for good (it announces
    `{"event": "ready", ...}` among llama.cpp's own lines), its stderr goes to a log file.
    """

    def __init__(self, name: str, module: str, arguments: list[str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self.announcements: "queue.Queue[dict | None]" = queue.Queue()
        self.started = time.perf_counter()
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen([sys.executable, "-m", module, *arguments],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log_file, env=test_environment())
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            try:
                value = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(value, dict) and "event" in value:
                self.announcements.put(value)
        self.announcements.put(None)

    def wait_ready(self, timeout: float) -> dict:
        """The ready announcement (port, ...), with the seconds from process start in `seconds`."""
        try:
            announcement = self.announcements.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s: {self.describe()}") from None
        now = time.perf_counter()
        if announcement is None or announcement.get("event") != "ready":
            raise RuntimeError(f"{self.name} did not start ({announcement}): {self.describe()}")
        return {**announcement, "seconds": now - self.started}

    def describe(self) -> str:
        tail = self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""
        return f"exit code {self.process.poll()}, log {self.log_path}: {tail!r}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # the child's own way out: EOF on stdin
            except OSError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()


def model_host_arguments(model: Path, threads: int, endpoints=(), shares=()) -> list[str]:
    from meshdesk.app.assembly import model_context

    # The context a node gives this model: the same KV cache, so the same arithmetic.
    arguments = ["--model", str(model), "--threads", str(threads), "--context", str(model_context(model, None)),
                 "--speculative", "off"]  # plain speed, like the node (bench/speculative.py measures speculation)
    for endpoint in endpoints:
        arguments += ["--rpc", endpoint]
    if shares:
        arguments += ["--tensor-split", ",".join(str(share) for share in shares)]
    return arguments


def request_line(prompt: str, max_tokens: int) -> bytes:
    from meshdesk.core.openai_api import parse_completion_request

    request = parse_completion_request({"model": "bench", "prompt": prompt, "max_tokens": max_tokens,
                                        "temperature": 0, "top_p": TOP_P, "seed": SEED, "stream": True})
    return json.dumps(request.to_wire()).encode("utf-8") + b"\n"


def run_model_host(side: str, port: int, prompt: str, max_tokens: int, repetition: int) -> Run:
    """One completion straight from a model host, in the node's own protocol (JSON lines)."""
    pieces: list[str] = []
    first = last = None
    line = request_line(prompt, max_tokens)
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        connection.sendall(line)
        with connection.makefile("rb") as reader:
            for raw in reader:
                event = json.loads(raw)
                if event.get("type") == "delta" and event.get("text"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    pieces.append(event["text"])
                elif event.get("type") == "error":
                    raise RuntimeError(f"{side}: the model host answered {event}")
                elif event.get("type") == "finish":
                    break
            else:
                raise RuntimeError(f"{side}: the model host closed the connection mid-answer")
    return finished_run(side, prompt, repetition, start, first, last, pieces)


def run_api(client, model_id: str, prompt: str, max_tokens: int, repetition: int) -> Run:
    pieces: list[str] = []
    first = last = None
    start = time.perf_counter()
    stream = client.completions.create(model=model_id, prompt=prompt, max_tokens=max_tokens,
                                       temperature=0, top_p=TOP_P, seed=SEED, stream=True)
    for chunk in stream:
        text = chunk.choices[0].text if chunk.choices else ""
        if text:
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
            pieces.append(text)
    return finished_run(MESHDESK, prompt, repetition, start, first, last, pieces)


def finished_run(side, prompt, repetition, start, first, last, pieces) -> Run:
    if first is None:
        raise RuntimeError(f"{side}: no text streamed for prompt {prompt!r}")
    return Run(side, prompt, repetition, pieces, first - start, last - first)


# --- the mesh ---------------------------------------------------------------------------------------


def start_node(home: Path, *arguments: str, environment: dict | None = None) -> NodeProcess:
    """A headless node on 127.0.0.1 (as tests/nodes.py starts them), killed if it never serves;
    `environment` adds variables to its environment."""
    command = meshdesk_command("--headless", "--home", str(home), "--port", "0",
                               "--bind-host", "127.0.0.1", *arguments)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=test_environment({**NODE_ENVIRONMENT, **(environment or {})}))
    try:
        return NodeProcess(process, home)  # waits for the `API: http://127.0.0.1:PORT/v1` line
    except BaseException:
        process.kill()
        process.wait()
        raise


def split_ready(status: dict) -> dict | None:
    """A's split plan once its split model host is ready.

    A first hosts the model alone (B has not joined yet) and restarts its model host when the
    plan becomes a split. Weights referenced through the tunnel tell the split host from the solo
    one: only the split host's RPC traffic crosses it, and the solo host is stopped before the
    split host starts.
    """
    plans, models = status.get("plans") or [], status.get("models") or []
    if not plans or not models or plans[0].get("state") != "split":
        return None
    if models[0].get("state") == "failed":
        raise RuntimeError(f"A's split model host failed: {models[0].get('error')}")
    if models[0].get("state") != "ready" or status["traffic"]["weights_referenced_bytes"] <= 0:
        return None
    return plans[0]


def host_start_time(node: NodeProcess, pid: int) -> float | None:
    """When node A started the model host with this pid (time.time() seconds), from its log."""
    log = node.home / "logs" / "meshdesk.log"
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        match = STARTED_HOST_LINE.match(line)
        if match and int(match.group(2)) == pid:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def start_mesh(root: Path, model: Path, arguments, nodes: list[NodeProcess]) -> tuple[NodeProcess, dict, Loaded]:
    """Node A (seeds the model, --split) and node B (joins with its own copy); A hosts the split."""
    home_a, home_b = root / "node-a", root / "node-b"
    (home_b / "models").mkdir(parents=True)
    os.link(model, home_b / "models" / model.name)  # B's own copy of the file, as a friend's would be
    threads = ["--threads", str(arguments.threads)]
    started = time.perf_counter()
    node_a = start_node(home_a, "--model", str(model), "--split", "--speculative", "off", *threads)
    nodes.append(node_a)
    token = node_a.invite_token()
    # B also asks for a split: every node plans from the seeding entry of the lowest node id,
    # which may be B's (B seeds the same file, the built-in model found in its home).
    node_b = start_node(home_b, "--join", token, "--max-vram", str(B_MAX_VRAM_GB), "--split", *threads)
    nodes.append(node_b)
    deadline = time.monotonic() + arguments.ready_timeout
    while (plan := split_ready(node_a.status())) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no ready split on A after {arguments.ready_timeout:.0f} s: "
                               f"{json.dumps(node_a.status())[:1500]}")
        for node in (node_a, node_b):
            if node.process.poll() is not None:
                raise RuntimeError(f"node exited: {node.describe()}")
        time.sleep(POLL_SECONDS)
    ready_wall, ready_perf = time.time(), time.perf_counter()
    status = node_a.status()
    if status["node"]["id"] != plan["host"] or plan["members"][-1]["id"] != plan["host"]:
        raise RuntimeError(f"A is not the split's host (last device): {plan}")
    host_started = host_start_time(node_a, status["models"][0]["pid"])
    seconds = ready_wall - host_started if host_started is not None else math.nan
    loaded = Loaded(seconds, [f"node A start to split ready {ready_perf - started:.1f} s "
                              f"(joining, planning, a first solo load that the split replaces)"])
    return node_a, status, loaded


# --- measuring --------------------------------------------------------------------------------------


def median(values) -> float:
    values = [value for value in values if not math.isnan(value)]
    return statistics.median(values) if values else math.nan


def spread(values) -> float:
    """(max - min) / median: how far apart a side's runs landed."""
    values = [value for value in values if not math.isnan(value)]
    middle = median(values)
    return (max(values) - min(values)) / middle if values and middle else math.nan


def measure(arguments, run_side) -> list[Run]:
    for side in SIDES:  # warm-up, not counted: the first generation on each side pays one-off costs
        run_side(side, PROMPTS[0], 8, -1)
    runs: list[Run] = []
    group = 0
    for repetition in range(arguments.repetitions):
        for prompt in PROMPTS:
            # Rotate the order, so each side runs first, second and third equally often.
            order = SIDES[group % 3:] + SIDES[:group % 3]
            group += 1
            for position, side in enumerate(order):
                run = run_side(side, prompt, arguments.max_tokens, repetition)
                run.position = position
                runs.append(run)
                print(f"  rep {repetition + 1}  {side:<8}  {prompt[:34]:<34}  {run.chunks:>4} tok  "
                      f"{run.tokens_per_second:7.1f} tok/s  ttft {run.ttft * 1000:7.1f} ms", flush=True)
    return runs


def same_output(runs: list[Run], side: str, reference: str) -> tuple[int, int]:
    """(pairs that differ, pairs): the same prompt and repetition, piece for piece."""
    theirs = {(r.prompt, r.repetition): r.pieces for r in runs if r.side == reference}
    mine = [r for r in runs if r.side == side]
    return sum(1 for r in mine if r.pieces != theirs[(r.prompt, r.repetition)]), len(mine)


def report(runs: list[Run], arguments, loads: dict[str, Loaded], plan: dict, model_bytes: int,
           traffic_loaded: dict, traffic_after: dict, load_before) -> None:
    print()
    print(f"per prompt (median over {arguments.repetitions} repetition(s), tok/s):")
    print(f"  {'prompt':<34} {SOLO:>8} {MESHDESK:>9} {DIRECT:>8}  {'meshdesk/direct':>15}")
    for prompt in PROMPTS:
        rates = {side: median(r.tokens_per_second for r in runs if r.side == side and r.prompt == prompt)
                 for side in SIDES}
        ratio = rates[MESHDESK] / rates[DIRECT] if rates[DIRECT] else math.nan
        print(f"  {prompt[:34]:<34} {rates[SOLO]:8.1f} {rates[MESHDESK]:9.1f} {rates[DIRECT]:8.1f}  {ratio:15.3f}")

    print()
    print(f"  {'side':<9} {'runs':>4} {'tok/run':>7} {'median tok/s':>12} {'spread':>6} "
          f"{'median TTFT':>11} {'load':>7}")
    summary = {}
    for side in SIDES:
        mine = [r for r in runs if r.side == side]
        rates = [r.tokens_per_second for r in mine]
        summary[side] = (median(rates), spread(rates))
        print(f"  {side:<9} {len(mine):>4} {median(r.chunks for r in mine):>7.0f} {summary[side][0]:>12.1f} "
              f"{summary[side][1]:>6.0%} {median(r.ttft for r in mine) * 1000:>8.1f} ms "
              f"{loads[side].seconds:>5.1f} s")
    print("  load = model host process start to ready; for meshdesk, A's split model host, from A's log")
    for side in SIDES:
        for note in loads[side].notes:
            print(f"    {side}: {note}")

    print()
    differ, pairs = same_output(runs, MESHDESK, DIRECT)
    print(f"  meshdesk output equals direct RPC output token for token: "
          f"{'yes' if not differ else f'NO ({differ} of {pairs} runs differ)'} ({pairs} runs)")
    differ_solo, _ = same_output(runs, SOLO, DIRECT)
    print(f"  (solo output equals direct RPC output: "
          f"{'yes' if not differ_solo else f'no, {differ_solo} of {pairs} runs differ'}; "
          f"not required: the split runs on other backends)")

    print()
    members = ", ".join(f"{m['id'][:8]}{' (A, host)' if m['id'] == plan['host'] else ' (B)'} "
                        f"share {m['share']} ({m['layers']} layers)" for m in plan["members"])
    print(f"  A's plan, device order: {members}")
    remote_share = sum(m["share"] for m in plan["members"] if m["id"] != plan["host"])
    share_bytes = model_bytes * remote_share
    sent, referenced = traffic_loaded["weights_sent_bytes"], traffic_loaded["weights_referenced_bytes"]
    print(f"  A's traffic after loading: weights sent {sent:,} B, weights referenced {referenced:,} B, "
          f"activations and commands {traffic_loaded['activations_bytes']:,} B")
    print(f"  B's share of the model: {model_bytes:,} B x {remote_share:.4f} = {share_bytes:,.0f} B "
          f"(referenced = {referenced / share_bytes:.1%} of it; the token embeddings stay on the host)")
    generated = sum(r.chunks for r in runs if r.side == MESHDESK)
    requests = sum(1 for r in runs if r.side == MESHDESK) + 1  # and the warm-up
    during = traffic_after["activations_bytes"] - traffic_loaded["activations_bytes"]
    print(f"  A's traffic during the runs: {during:,} B activations and commands for {requests} requests "
          f"(~{during / max(1, generated + 8):,.0f} B per generated token, prompts included); "
          f"weights sent meanwhile {traffic_after['weights_sent_bytes'] - sent:,} B")

    load_after = os.getloadavg()
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} cores, --threads {arguments.threads}")
    reasons = (["quick run"] if arguments.quick else []) + [
        f"{side} runs spread {summary[side][1]:.0%}" for side in SIDES if summary[side][1] > NOISY_SPREAD]
    if load_before[0] > 0.5:
        reasons.append(f"other work was running: load average {load_before[0]:.2f} before the run")
    if reasons:
        print(f"  WARNING: numbers may be noisy ({', '.join(reasons)})")

    ratio = summary[MESHDESK][0] / summary[DIRECT][0] if summary[DIRECT][0] else math.nan
    weights_ratio = sent / share_bytes if share_bytes else math.nan
    print()
    print(f"MeshDesk / direct RPC tokens/s = {ratio:.3f} target >= {TARGET_RATIO:.2f} "
          f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}")
    print(f"weights sent / share = {weights_ratio:.3%} target <= {TARGET_WEIGHTS_SENT:.0%} "
          f"{'PASS' if weights_ratio <= TARGET_WEIGHTS_SENT else 'FAIL'}")


def stop_on_signal(signum, frame) -> None:
    raise Stopped(f"stopped by signal {signum}")


def failed(nodes: list[NodeProcess]) -> int:
    """After a failed run: the traceback, where each node stood; the exit code."""
    traceback.print_exc()
    for node in nodes:
        print(f"node {node.home.name}: {node.describe()}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    load_before = os.getloadavg()
    model = arguments.model or bundled_model()
    if not model.is_file():
        print(f"error: no model file at {model}", file=sys.stderr)
        return 1
    print(f"model {model}  threads {arguments.threads}  max_tokens {arguments.max_tokens}  "
          f"repetitions {arguments.repetitions}  prompts {len(PROMPTS)}  temperature 0  "
          f"top_p {TOP_P}  seed {SEED}", flush=True)
    children: list[Child] = []
    nodes: list[NodeProcess] = []
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-split-") as folder:
        root = Path(folder)
        try:
            threads = arguments.threads
            loads: dict[str, Loaded] = {}

            # 1. solo: a model host with no RPC devices
            solo = Child("solo model host", "meshdesk.adapters.llama.host",
                         model_host_arguments(model, threads), root / "solo-host.log")
            children.append(solo)
            ready = solo.wait_ready(arguments.ready_timeout)
            solo_port, loads[SOLO] = ready["port"], Loaded(ready["seconds"])
            print(f"solo ready after {ready['seconds']:.1f} s", flush=True)

            # 2. meshdesk: nodes A and B, A hosting the split
            node_a, status, loads[MESHDESK] = start_mesh(root, model, arguments, nodes)
            plan, traffic_loaded = status["plans"][0], dict(status["traffic"])
            shares = [member["share"] for member in plan["members"]]
            print(f"meshdesk split ready: shares {shares} (device order, A last), "
                  f"{loads[MESHDESK].notes[0]}", flush=True)
            client = node_a.client()
            model_id = client.models.list().data[0].id

            # 3. direct: the same split, straight to two rpc workers
            workers = []
            for index in range(len(shares)):
                worker = Child(f"rpc worker {index + 1}", "meshdesk.adapters.llama.rpc_worker",
                               ["--threads", str(threads)], root / f"rpc-worker-{index + 1}.log")
                children.append(worker)
                workers.append(worker)
            endpoints, worker_seconds = [], []
            for worker in workers:
                worker_ready = worker.wait_ready(arguments.ready_timeout)
                endpoints.append(f"127.0.0.1:{worker_ready['port']}")
                worker_seconds.append(worker_ready["seconds"])
            direct = Child("direct model host", "meshdesk.adapters.llama.host",
                           model_host_arguments(model, threads, endpoints, shares), root / "direct-host.log")
            children.append(direct)
            ready = direct.wait_ready(arguments.ready_timeout)
            direct_port = ready["port"]
            loads[DIRECT] = Loaded(ready["seconds"], [
                "rpc workers start to ready " + ", ".join(f"{s:.1f} s" for s in worker_seconds)])
            print(f"direct ready after {ready['seconds']:.1f} s: --rpc {' --rpc '.join(endpoints)} "
                  f"--tensor-split {','.join(str(s) for s in shares)}", flush=True)

            def run_side(side: str, prompt: str, max_tokens: int, repetition: int) -> Run:
                if side == MESHDESK:
                    return run_api(client, model_id, prompt, max_tokens, repetition)
                return run_model_host(side, solo_port if side == SOLO else direct_port,
                                      prompt, max_tokens, repetition)

            runs = measure(arguments, run_side)
            traffic_after = node_a.status()["traffic"]
            report(runs, arguments, loads, plan, model.stat().st_size, traffic_loaded, traffic_after,
                   load_before)
        except (Exception, Stopped, KeyboardInterrupt):
            return failed(nodes)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleaning up; do not stop half-way
            for node in nodes:  # A first: B stopping first would make A re-plan and reload
                node.stop()
            for child in reversed(children):
                child.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
