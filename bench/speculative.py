"""What does speculative decoding buy? The same model with and without a draft, side by side.

Two model host children (`python -m meshdesk.adapters.llama.host`) load the same GGUF:

- **plain**: `--model MODEL`;
- **draft**: `--model MODEL --draft DRAFT --draft-max N`.

Both get the same greedy completions (temperature 0, seed 1234) on prose and code prompts,
taking turns one at a time (the side that goes first alternates), after an uncounted warm-up.

    .venv/bin/python bench/speculative.py                 # 2 repetitions x 4 prompts x 128 tokens
    .venv/bin/python bench/speculative.py --quick         # 1 repetition x 32 tokens (smoke test)
    .venv/bin/python bench/speculative.py --model BIG.gguf --draft SMALL.gguf

By default the bundled Gemma 3 270M drafts for itself: the only model on this machine. That
pair is an upper bound on acceptance (the draft is the model), and no speed-up can come from
it, since each proposed token costs the draft as much as the main model spends on a token. What
it does measure is the machinery: acceptance, tokens per main-model pass, and the cost of a
draft as large as the model. Tokens per main-model pass is what counts when the main model is
split over a network, since each pass is a network round trip (ARCHITECTURE section 5).

Tokens are the host's `completion_tokens`; tokens/s runs from the first text piece to the last
(prompt processing left out), as in the other benchmarks.

Exit code 0 whatever the numbers (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from meshdesk.core.openai_api import parse_completion_request  # noqa: E402
from tests.split_tools import Child  # noqa: E402

PROMPTS = (
    ("prose", "Once upon a time"),
    ("prose", "The history of the Roman Empire"),
    ("code", "def fibonacci(n):"),
    ("code", "import numpy as np\n\nclass Matrix:"),
)
SEED = 1234
PLAIN, DRAFT = "plain", "draft"
HOST_MODULE = "meshdesk.adapters.llama.host"


@dataclass
class Run:
    side: str
    kind: str
    prompt: str
    tokens: int
    seconds: float          # first text piece to last
    text: str
    speculative: dict | None = None

    @property
    def tokens_per_second(self) -> float:
        return (self.tokens - 1) / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Totals:
    proposed: int = 0
    accepted: int = 0
    steps: int = 0
    generated: int = 0
    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.runs.append(run)
        counts = run.speculative or {}
        self.proposed += counts.get("proposed", 0)
        self.accepted += counts.get("accepted", 0)
        self.steps += counts.get("steps", 0)
        self.generated += counts.get("generated", 0)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="main GGUF (default: the bundled Gemma 3 270M, "
                        "assembled into ~/.cache/meshdesk/bench)")
    parser.add_argument("--draft", type=Path, help="draft GGUF with the same vocabulary "
                        "(default: the main model itself)")
    parser.add_argument("--draft-max", type=int, default=8, help="tokens proposed per step (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each host (default 1)")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="1 repetition x 32 tokens")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.repetitions, arguments.max_tokens = 1, 32
    if arguments.threads < 1 or arguments.repetitions < 1 or arguments.max_tokens < 2 or arguments.draft_max < 1:
        parser.error("--threads, --repetitions and --draft-max must be >= 1, --max-tokens >= 2")
    return arguments


def bundled_model() -> Path:
    """The bundled Gemma 3 270M, assembled once into ~/.cache/meshdesk/bench."""
    from meshdesk.adapters.bundled_model import install_bundled_model

    return install_bundled_model(Path.home() / ".cache" / "meshdesk" / "bench")


def generate(port: int, prompt: str, max_tokens: int) -> tuple[str, float, dict]:
    request = parse_completion_request({"model": "m", "prompt": prompt, "max_tokens": max_tokens,
                                        "temperature": 0, "top_p": 1.0, "seed": SEED})
    pieces: list[str] = []
    first = last = None
    with socket.create_connection(("127.0.0.1", port), timeout=600) as connection:
        connection.sendall(json.dumps(request.to_wire()).encode() + b"\n")
        for line in connection.makefile():
            event = json.loads(line)
            if event["type"] == "delta" and event.get("text"):
                last = time.perf_counter()
                first = first or last
                pieces.append(event["text"])
            elif event["type"] == "error":
                raise RuntimeError(f"the model host failed: {event.get('message')}")
            elif event["type"] == "finish":
                return "".join(pieces), (last - first) if first else 0.0, event
    raise RuntimeError("the model host closed the connection mid-answer")


def run_once(side: str, port: int, kind: str, prompt: str, max_tokens: int) -> Run:
    text, seconds, finish = generate(port, prompt, max_tokens)
    return Run(side, kind, prompt, finish["usage"]["completion_tokens"], seconds, text,
               finish.get("speculative"))


def median(values) -> float:
    values = [value for value in values if value == value]
    return statistics.median(values) if values else float("nan")


def report(totals: dict[tuple[str, str], Totals], arguments, model: Path, draft: Path) -> None:
    passes_per_token = report_kinds(totals)
    report_pair(totals, arguments, model, draft)
    # The verdict is on what a draft is for: fewer passes of the main model per token (each a
    # network round trip when the main model is split); without a draft it is one per token.
    verdict = "PASS" if passes_per_token < 1.0 else "FAIL"
    print(f"\nmain-model passes per token with the draft = {passes_per_token:.3f} target < 1.000 {verdict}")


def report_kinds(totals: dict[tuple[str, str], Totals]) -> float:
    """Prints the table per kind of prompt; returns the main-model passes per token over all."""
    print("\nper kind (median tokens/s over runs; acceptance and tokens per step over all steps):")
    print(f"  {'kind':6} {'plain tok/s':>12} {'draft tok/s':>12} {'ratio':>7} {'acceptance':>11} "
          f"{'tok/step':>9} {'main passes/token':>18}")
    for kind in ("prose", "code", "all"):
        kinds = ("prose", "code") if kind == "all" else (kind,)
        plain = [run for k in kinds for run in totals[(PLAIN, k)].runs]
        drafted = Totals()
        for k in kinds:
            for run in totals[(DRAFT, k)].runs:
                drafted.add(run)
        plain_speed = median(run.tokens_per_second for run in plain)
        draft_speed = median(run.tokens_per_second for run in drafted.runs)
        acceptance = drafted.accepted / drafted.proposed if drafted.proposed else float("nan")
        per_step = drafted.generated / drafted.steps if drafted.steps else float("nan")
        # Tokens the draft side's main model produced per forward pass, the first token (from
        # the prompt pass) included; without a draft this is 1 pass per token.
        tokens = sum(run.tokens for run in drafted.runs)
        passes = drafted.steps + len(drafted.runs)
        passes_per_token = passes / tokens if tokens else float("nan")
        print(f"  {kind:6} {plain_speed:12.1f} {draft_speed:12.1f} {draft_speed / plain_speed:7.2f} "
              f"{acceptance:11.1%} {per_step:9.2f} {passes_per_token:18.3f}")
    return passes_per_token  # the last kind is "all"


def report_pair(totals: dict[tuple[str, str], Totals], arguments, model: Path, draft: Path) -> None:
    same = [(run_p.text == run_d.text) for (run_p, run_d) in zip(
        [r for k in ("prose", "code") for r in totals[(PLAIN, k)].runs],
        [r for k in ("prose", "code") for r in totals[(DRAFT, k)].runs])]
    print(f"\nsame text with and without the draft: {sum(same)} of {len(same)} runs")
    if not all(same):
        print("  (expected at near ties: llama.cpp's CPU kernels give a verification batch of\n"
              "   several tokens logits up to ~1 apart from a one-token decode, and this small model\n"
              "   has many near ties; tests/test_speculative.py checks that a difference only\n"
              "   starts where the plain model's top two tokens are that close)")
    pair = "the model drafting for itself" if draft.resolve() == model.resolve() else "a real pair"
    print(f"\npair: {model.name} (main) + {draft.name} (draft), {pair}; --draft-max {arguments.draft_max}, "
          f"--threads {arguments.threads}")
    if draft.resolve() == model.resolve():
        print("  This pair is an upper bound on acceptance, not a realistic pair: the draft IS the\n"
              "  model, so every proposal costs as much as a main-model token and the ratio must be\n"
              "  below 1. It shows how many tokens one main-model pass yields (network round trips\n"
              "  saved when the main model is split), not the speed-up of a small draft.")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    model = arguments.model or bundled_model()
    draft = arguments.draft or model
    for path in (model, draft):
        if not path.is_file():
            print(f"error: no model file at {path}", file=sys.stderr)
            return 1
    common = ["--model", str(model), "--threads", str(arguments.threads)]
    hosts = {PLAIN: Child(HOST_MODULE, *common),
             DRAFT: Child(HOST_MODULE, *common, "--draft", str(draft), "--draft-max", str(arguments.draft_max))}
    load_before = os.getloadavg()
    try:
        ports = {side: host.port(timeout=300) for side, host in hosts.items()}
        if "draft" not in hosts[DRAFT].ready:
            print(f"error: the draft did not load: {hosts[DRAFT].ready.get('draft_error')}", file=sys.stderr)
            return 1
        print(f"model {model}  draft {draft}  threads {arguments.threads}  max_tokens {arguments.max_tokens}  "
              f"repetitions {arguments.repetitions}")
        for side in (PLAIN, DRAFT):  # warm-up, not counted
            generate(ports[side], "Hello", 8)
        totals = {(side, kind): Totals() for side in (PLAIN, DRAFT) for kind in ("prose", "code")}
        turn = 0
        for repetition in range(arguments.repetitions):
            for kind, prompt in PROMPTS:
                order = (PLAIN, DRAFT) if turn % 2 == 0 else (DRAFT, PLAIN)
                turn += 1
                for side in order:
                    run = run_once(side, ports[side], kind, prompt, arguments.max_tokens)
                    totals[(side, kind)].add(run)
                    extra = ""
                    if run.speculative:
                        s = run.speculative
                        extra = (f"  accepted {s['accepted']}/{s['proposed']}  steps {s['steps']}  "
                                 f"tok/step {s['generated'] / max(1, s['steps']):.2f}")
                    print(f"  rep {repetition + 1} {side:5} {kind:5} {prompt[:28]!r:32} {run.tokens:4d} tok "
                          f"{run.tokens_per_second:7.1f} tok/s{extra}", flush=True)
        report(totals, arguments, model, draft)
        load_after = os.getloadavg()
        print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores")
        return 0
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for host in hosts.values():
            host.stop()


if __name__ == "__main__":
    raise SystemExit(main())
