"""Does prompt-lookup speculation buy tokens per round trip? A split model under link delays,
with and without speculation, on code edits and prose (issue 13's goals).

Each side is its own direct llama.cpp split (as bench/split.py's direct side): a "remote"
rpc worker reached through a `DelayProxy` (tests/delay_proxy.py) that holds host-to-member
bytes for the one-way delay, the host's own rpc worker on loopback, and a model host child
(`python -m meshdesk.adapters.llama.host --rpc PROXY --rpc LOCAL --tensor-split 0.5,0.5`).
An rpc worker serves one client at a time, so every side has its own two workers:

- **off**: `--speculative off`, one main-model pass (one round trip) per token;
- **ngram**: `--speculative ngram --ngram-max N`, tokens proposed from n-gram matches in the
  prompt and the answer so far, verified in one batched pass;
- **draft** (with `--draft PATH`): `--speculative draft --draft PATH --draft-max N`.

The sides get the same greedy chat requests (temperature 0, no seed, as agents send them): code edits
(bench/prompts/code_edits.py: type hints, a rename through a file, a bug fix, two of each,
answers that repeat their input) and open prose (bench/prompts/prose.py). For each delay the
sides start afresh with the delay already on their link, as a node's model host loads on its
real link: n-gram times what a verified row costs at load, round trips included. Then they take
turns one request at a time, the side that goes first alternating, after an uncounted warm-up.

    .venv/bin/python bench/speculative.py                      # delays 0,20 ms, 10 prompts x 256 tokens
    .venv/bin/python bench/speculative.py --delays 0,5,10,20
    .venv/bin/python bench/speculative.py --quick              # 1 prompt of each kind x 48 tokens (smoke test)

Tokens are the host's `completion_tokens`; tokens/s runs from the first text piece to the last
(prompt processing left out), as in the other benchmarks. Acceptance and tokens per pass come
from the host's `finish` event; round trips are the proxy's count (a reply from the remote
worker after bytes were sent to it) during the request, prompt included.

The goals (issue 13): at 20 ms, n-gram on code edits >= 1.5x the tok/s of no speculation; on
prose never below 0.95x (checked at every delay measured).

Exit code 0 whatever the verdicts (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.prompts.code_edits import CODE_EDITS, EDITOR_SYSTEM  # noqa: E402
from bench.prompts.prose import PROSE  # noqa: E402
from meshdesk.core.openai_api import parse_chat_request  # noqa: E402
from tests.delay_proxy import DelayProxy  # noqa: E402
from tests.split_tools import Child, rpc_worker  # noqa: E402

OFF, NGRAM, DRAFT = "off", "ngram", "draft"
CODE, PROSE_KIND = "code", "prose"
KINDS = (CODE, PROSE_KIND)
GOAL_DELAY_MS = 20
CODE_GOAL = 1.5    # n-gram / off tok/s on code edits at GOAL_DELAY_MS, at least
PROSE_GOAL = 0.95  # n-gram / off tok/s on prose at every delay, at least
HOST_MODULE = "meshdesk.adapters.llama.host"
REMOTE_SHARE = 0.5  # the remote worker's share of the layers; the host's own worker has the rest


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: clean up and exit 1."""


@dataclass(frozen=True)
class Prompt:
    kind: str
    name: str
    message: str
    system: str = ""  # a system message before it (the code edits': an editor's)


@dataclass
class Run:
    side: str
    prompt: Prompt
    delay_ms: float
    repetition: int
    tokens: int
    seconds: float          # first text piece to last
    text: str
    speculative: dict | None
    round_trips: int

    @property
    def tokens_per_second(self) -> float:
        return (self.tokens - 1) / self.seconds if self.tokens > 1 and self.seconds > 0 else math.nan


@dataclass
class Side:
    """One split: a model host, its remote worker behind a delaying proxy, its own local worker."""

    name: str
    host: Child
    proxy: DelayProxy
    workers: list[Child]
    port: int = 0

    def stop(self) -> None:
        self.host.stop()
        self.proxy.stop()
        for worker in self.workers:
            worker.stop()


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF with a chat template (default: the bundled "
                        "SmolLM2-135M-Instruct, linked into ~/.cache/meshdesk/bench)")
    parser.add_argument("--draft", type=Path, help="a draft GGUF with the same vocabulary: adds the draft side")
    parser.add_argument("--draft-max", type=int, default=8, help="tokens a draft proposes per step (default 8)")
    parser.add_argument("--ngram-max", type=int, default=8, help="tokens n-gram proposes per step (default 8)")
    parser.add_argument("--delays", default="0,20", help="one-way delays in ms, host to member (default 0,20)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each host and worker (default 1)")
    parser.add_argument("--repetitions", type=int, default=1, help="rounds over all prompts per delay (default 1)")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per answer (default 256)")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write every run (prompt, side, delay, text, counts) to PATH, for analysis")
    parser.add_argument("--quick", action="store_true",
                        help="one prompt of each kind x 48 tokens at 0 and 20 ms (a smoke test; rough numbers)")
    arguments = parser.parse_args(argv)
    try:
        arguments.delays = [float(delay) for delay in arguments.delays.split(",")]
    except ValueError:
        parser.error(f"--delays must be numbers separated by commas, got {arguments.delays!r}")
    if arguments.quick:
        arguments.repetitions, arguments.max_tokens, arguments.delays = 1, 48, [0.0, float(GOAL_DELAY_MS)]
    if (arguments.threads < 1 or arguments.repetitions < 1 or arguments.max_tokens < 2
            or arguments.draft_max < 1 or arguments.ngram_max < 1 or min(arguments.delays) < 0):
        parser.error("--threads, --repetitions, --draft-max and --ngram-max must be >= 1, "
                     "--max-tokens >= 2, delays >= 0")
    return arguments


def prompts(quick: bool) -> list[Prompt]:
    code = [Prompt(CODE, name, message, EDITOR_SYSTEM) for name, message in CODE_EDITS]
    prose = [Prompt(PROSE_KIND, name, message) for name, message in PROSE]
    # Quick: the shortest edit (a bug fix) and one prose prompt, so the smoke test takes seconds.
    return [code[4], prose[0]] if quick else code + prose


def bundled_model() -> Path:
    from meshdesk.adapters.bundled_smollm2 import install_smollm2

    return install_smollm2(Path.home() / ".cache" / "meshdesk" / "bench")


# --- the splits ------------------------------------------------------------------------------------


def side_options(side: str, arguments) -> list[str]:
    if side == DRAFT:
        return ["--speculative", DRAFT, "--draft", str(arguments.draft), "--draft-max", str(arguments.draft_max)]
    if side == NGRAM:
        return ["--speculative", NGRAM, "--ngram-max", str(arguments.ngram_max)]
    return ["--speculative", OFF]


def start_side(side: str, model: Path, arguments, delay_ms: float) -> Side:
    """Starts the side's children without waiting for its model host (sides load in parallel)."""
    from meshdesk.app.assembly import model_context

    remote, remote_port = rpc_worker()
    workers = [remote]
    proxy = DelayProxy(("127.0.0.1", remote_port), delay_ms / 1000.0)
    try:
        proxy_host, proxy_port = proxy.start()
        local, local_port = rpc_worker()
        workers.append(local)
        # The context a node gives this model, so the arithmetic is a node's.
        host = Child(HOST_MODULE, "--model", str(model), "--threads", str(arguments.threads),
                     "--context", str(model_context(model, None)),
                     "--rpc", f"{proxy_host}:{proxy_port}", "--rpc", f"127.0.0.1:{local_port}",
                     "--tensor-split", f"{REMOTE_SHARE},{1 - REMOTE_SHARE}", *side_options(side, arguments))
    except BaseException:
        proxy.stop()
        for worker in workers:
            worker.stop()
        raise
    return Side(side, host, proxy, workers)


def wait_ready(side: Side) -> None:
    side.port = side.host.port(timeout=300)
    running = side.host.ready.get("speculation")
    if running != side.name:
        raise RuntimeError(f"the {side.name} side's host runs speculation {running!r}, not {side.name!r}: "
                           f"{side.host.ready}")
    # What the host says about its speculation (e.g. n-gram's measured cost of a verified row).
    details = {key: value for key, value in side.host.ready.items() if key not in ("event", "port")}
    print(f"{side.name} host ready: {json.dumps(details)}", flush=True)


# --- requests --------------------------------------------------------------------------------------


def chat_line(message: str, max_tokens: int, system: str = "") -> bytes:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    request = parse_chat_request({"model": "bench", "messages": messages,
                                  "max_tokens": max_tokens, "temperature": 0, "stream": True})
    return json.dumps(request.to_wire()).encode("utf-8") + b"\n"


def generate(side: Side, message: str, max_tokens: int, system: str = "") -> tuple[str, float, dict]:
    """One answer in the model host's own protocol (JSON lines): text, streaming seconds, finish."""
    pieces: list[str] = []
    first = last = None
    with socket.create_connection(("127.0.0.1", side.port), timeout=600) as connection:
        connection.sendall(chat_line(message, max_tokens, system))
        with connection.makefile("rb") as reader:
            for raw in reader:
                event = json.loads(raw)
                if event.get("type") == "delta" and event.get("text"):
                    last = time.perf_counter()
                    first = first if first is not None else last
                    pieces.append(event["text"])
                elif event.get("type") == "error":
                    raise RuntimeError(f"{side.name}: the model host answered {event}")
                elif event.get("type") == "finish":
                    return "".join(pieces), (last - first) if first is not None else 0.0, event
    raise RuntimeError(f"{side.name}: the model host closed the connection mid-answer")


def run_once(side: Side, prompt: Prompt, delay_ms: float, repetition: int, max_tokens: int) -> Run:
    before = side.proxy.counters()["round_trips"]
    text, seconds, finish = generate(side, prompt.message, max_tokens, prompt.system)
    round_trips = side.proxy.counters()["round_trips"] - before
    return Run(side.name, prompt, delay_ms, repetition, finish["usage"]["completion_tokens"], seconds, text,
               finish.get("speculative"), round_trips)


def describe_run(run: Run) -> str:
    line = (f"  {run.delay_ms:4g} ms  {run.side:5} {run.prompt.kind:5} {run.prompt.name[:26]:26} "
            f"{run.tokens:4d} tok {run.tokens_per_second:6.1f} tok/s  "
            f"{run.round_trips / max(1, run.tokens):5.2f} rt/tok")
    counts = run.speculative
    if counts and counts.get("steps"):
        line += (f"  accepted {counts.get('accepted', 0)}/{counts.get('proposed', 0)}"
                 f"  {counts.get('generated', 0) / counts['steps']:.2f} tok/pass")
        if counts.get("backed_off"):
            line += f"  backed off {counts['backed_off']} tok"
    return line


def measure(model: Path, side_names: list[str], arguments, sides: list[Side]) -> list[Run]:
    """Every delay on freshly started sides (`sides` holds the running ones, for cleaning up)."""
    runs: list[Run] = []
    turn = 0
    for delay_ms in arguments.delays:
        print(f"\n{delay_ms:g} ms one-way delay, host to member:", flush=True)
        for name in side_names:
            sides.append(start_side(name, model, arguments, delay_ms))
        for side in sides:
            wait_ready(side)
            generate(side, "Hello", 8)  # warm-up, not counted
        for repetition in range(arguments.repetitions):
            for prompt in prompts(arguments.quick):
                order = sides[turn % len(sides):] + sides[:turn % len(sides)]
                turn += 1
                for side in order:
                    run = run_once(side, prompt, delay_ms, repetition, arguments.max_tokens)
                    runs.append(run)
                    print(describe_run(run), flush=True)
        while sides:
            sides.pop().stop()
    return runs


# --- the report ------------------------------------------------------------------------------------


def median(values) -> float:
    values = [value for value in values if not math.isnan(value)]
    return statistics.median(values) if values else math.nan


def speed(runs: list[Run], side: str, kind: str, delay_ms: float) -> float:
    return median(r.tokens_per_second for r in runs if r.side == side and r.prompt.kind == kind
                  and r.delay_ms == delay_ms)


def counts(runs: list[Run], side: str, kind: str, delay_ms: float) -> tuple[float, float, float]:
    """Acceptance, tokens per main-model pass and round trips per token, over all those runs."""
    mine = [r for r in runs if r.side == side and r.prompt.kind == kind and r.delay_ms == delay_ms]
    proposed = sum((r.speculative or {}).get("proposed", 0) for r in mine)
    accepted = sum((r.speculative or {}).get("accepted", 0) for r in mine)
    steps = sum((r.speculative or {}).get("steps", 0) for r in mine)
    generated = sum((r.speculative or {}).get("generated", 0) for r in mine)
    tokens = sum(r.tokens for r in mine)
    return (accepted / proposed if proposed else math.nan,
            generated / steps if steps else math.nan,
            sum(r.round_trips for r in mine) / tokens if tokens else math.nan)


def ratio(runs: list[Run], side: str, kind: str, delay_ms: float) -> float:
    off = speed(runs, OFF, kind, delay_ms)
    return speed(runs, side, kind, delay_ms) / off if off else math.nan


def report_table(runs: list[Run], side_names: list[str], delays: list[float]) -> None:
    print("\nmedian tok/s per delay x kind x side; acceptance, tokens per pass and round trips per token "
          "over all runs:")
    print(f"  {'delay':>6} {'kind':5} {'side':5} {'tok/s':>7} {'x off':>6} {'accepted':>8} "
          f"{'tok/pass':>8} {'rt/tok':>7}")
    for delay_ms in delays:
        for kind in KINDS:
            for side in side_names:
                acceptance, per_pass, per_token = counts(runs, side, kind, delay_ms)
                print(f"  {delay_ms:4g} ms {kind:5} {side:5} {speed(runs, side, kind, delay_ms):7.1f} "
                      f"{ratio(runs, side, kind, delay_ms):6.2f} {fmt(acceptance, '8.1%')} "
                      f"{fmt(per_pass, '8.2f')} {per_token:7.2f}")


def fmt(value: float, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{'-':>{width}}" if math.isnan(value) else format(value, spec)


def report_same_output(runs: list[Run], side_names: list[str]) -> None:
    reference = {(r.prompt.name, r.delay_ms, r.repetition): r.text for r in runs if r.side == OFF}
    for side in side_names:
        if side == OFF:
            continue
        mine = [r for r in runs if r.side == side]
        forks = [(r, first_difference(r.text, reference[(r.prompt.name, r.delay_ms, r.repetition)]))
                 for r in mine if r.text != reference[(r.prompt.name, r.delay_ms, r.repetition)]]
        print(f"\nsame text as off on the {side} side: {len(mine) - len(forks)} of {len(mine)} runs")
        for run, at in forks:
            print(f"  differs from character {at}: {run.delay_ms:g} ms {run.prompt.name}")
        if forks:
            print("  (allowed at near ties, docs/decisions.md: a verification batch of several tokens gives\n"
                  "   logits a little apart from a one-token decode, and a small model has many near ties)")


def first_difference(text: str, reference: str) -> int:
    return next((at for at, (mine, theirs) in enumerate(zip(text, reference)) if mine != theirs),
                min(len(text), len(reference)))


def report_load(load_before, arguments) -> None:
    load_after = os.getloadavg()
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores, "
          f"--threads {arguments.threads} per host and worker")
    reasons = (["quick run"] if arguments.quick else []) + (
        [f"other work was running: load average {load_before[0]:.2f} before the run"] if load_before[0] > 0.5 else [])
    if reasons:
        print(f"WARNING: numbers may be noisy ({', '.join(reasons)})")


def report_goals(runs: list[Run], delays: list[float]) -> None:
    print()
    if GOAL_DELAY_MS in delays:
        code = ratio(runs, NGRAM, CODE, GOAL_DELAY_MS)
        print(f"n-gram / off tok/s on code edits at {GOAL_DELAY_MS} ms = {code:.2f} target >= {CODE_GOAL:.2f} "
              f"{'PASS' if code >= CODE_GOAL else 'FAIL'}")
    else:
        print(f"n-gram / off tok/s on code edits at {GOAL_DELAY_MS} ms: not measured (add it to --delays)")
    prose = {delay_ms: ratio(runs, NGRAM, PROSE_KIND, delay_ms) for delay_ms in delays}
    worst = min(prose, key=lambda delay_ms: prose[delay_ms])
    print(f"n-gram / off tok/s on prose, lowest over {', '.join(f'{d:g}' for d in delays)} ms = "
          f"{prose[worst]:.2f} (at {worst:g} ms) target >= {PROSE_GOAL:.2f} "
          f"{'PASS' if prose[worst] >= PROSE_GOAL else 'FAIL'}")


def save_runs(runs: list[Run], path: Path) -> None:
    path.write_text(json.dumps([{"side": r.side, "kind": r.prompt.kind, "name": r.prompt.name,
                                 "system": r.prompt.system, "message": r.prompt.message, "delay_ms": r.delay_ms, "repetition": r.repetition,
                                 "tokens": r.tokens, "seconds": r.seconds, "round_trips": r.round_trips,
                                 "speculative": r.speculative, "text": r.text} for r in runs], indent=1))


def stop_on_signal(signum, frame) -> None:
    raise Stopped(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    load_before = os.getloadavg()
    sides: list[Side] = []
    try:
        model = arguments.model or bundled_model()
        for path in (model, *([arguments.draft] if arguments.draft else [])):
            if not path.is_file():
                print(f"error: no model file at {path}", file=sys.stderr)
                return 1
        side_names = [OFF, NGRAM] + ([DRAFT] if arguments.draft else [])
        print(f"model {model}  sides {', '.join(side_names)}  delays {arguments.delays} ms  "
              f"max_tokens {arguments.max_tokens}  repetitions {arguments.repetitions}  "
              f"--ngram-max {arguments.ngram_max}  threads {arguments.threads}  split "
              f"{REMOTE_SHARE}/{1 - REMOTE_SHARE} (remote worker behind the proxy / host's own)", flush=True)
        runs = measure(model, side_names, arguments, sides)
        if arguments.json:
            save_runs(runs, arguments.json)
        report_table(runs, side_names, arguments.delays)
        report_same_output(runs, side_names)
        report_load(load_before, arguments)
        report_goals(runs, arguments.delays)
        return 0
    except (Exception, Stopped, KeyboardInterrupt):
        traceback.print_exc()
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleaning up; do not stop half-way
        for side in sides:
            side.stop()


if __name__ == "__main__":
    raise SystemExit(main())
