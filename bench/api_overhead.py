"""How much does the MeshDesk API cost? Streaming tokens/s through a real node vs llama.cpp in-process.

One run starts a real node (`python -m meshdesk --headless ...`) on a GGUF and loads the same GGUF
in this process with the settings the node's model host uses (`meshdesk.adapters.llama.host.py`).
Then it streams the same completions from both, interleaved (API, in-process, in-process, API, ...)
so that machine noise hits both sides alike, and never runs the two at the same time.

    .venv/bin/python bench/api_overhead.py            # 4 prompts x 3 repetitions, 128 tokens
    .venv/bin/python bench/api_overhead.py --quick    # 1 repetition, 32 tokens (smoke test)

Tokens are counted the same way on both sides: the number of streamed chunks that carry text
(llama-cpp-python yields one per sampled token; the node forwards each as one SSE chunk).
Tokens/s runs from the first text chunk to the last; time to first token (TTFT) runs from
sending the request (or calling `create_completion`) to the first text chunk.

Exit code 0 whatever the ratio (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.nodes import NodeProcess, meshdesk_command, test_environment  # noqa: E402

PROMPTS = (
    "Once upon a time",
    "def fibonacci(n):",
    "The history of the Roman Empire",
    "Here is a recipe for chocolate chip cookies:",
)
TARGET_RATIO = 0.95
# The node's model host loads with n_ctx=4096 (its --context default); so does the baseline.
CONTEXT = 4096
TOP_P = 1.0
SEED = 1234
NOISY_SPREAD = 0.10  # warn when a side's runs spread more than this around their median
API_SIDE, LOCAL_SIDE = "api", "in-process"


@dataclass
class Run:
    side: str
    prompt: str
    repetition: int
    chunks: int
    ttft: float  # seconds, request to first text chunk
    stream_seconds: float  # first text chunk to last
    text: str
    usage_tokens: int | None = None
    went_first: bool = False  # ran first in its API/in-process pair

    @property
    def tokens_per_second(self) -> float:
        if self.chunks < 2 or self.stream_seconds <= 0:
            return math.nan
        return (self.chunks - 1) / self.stream_seconds


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="GGUF to benchmark (default: the bundled Gemma 3 270M, assembled "
                             "into ~/.cache/meshdesk/bench)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for both sides (default 1, so that the two processes "
                             "share a 2-core machine fairly)")
    parser.add_argument("--repetitions", type=int, default=3, help="rounds over all prompts (default 3)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per completion (default 128)")
    parser.add_argument("--quick", action="store_true",
                        help="one repetition of 32 tokens (a smoke test; numbers are rough)")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for the node's model to be ready (default 180)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.repetitions, arguments.max_tokens = 1, 32
    if arguments.threads < 1 or arguments.repetitions < 1 or arguments.max_tokens < 2:
        parser.error("--threads and --repetitions must be >= 1, --max-tokens >= 2")
    return arguments


def bundled_model() -> Path:
    """The bundled Gemma 3 270M, assembled once into ~/.cache/meshdesk/bench."""
    from meshdesk.adapters.bundled_model import install_bundled_model

    return install_bundled_model(Path.home() / ".cache" / "meshdesk" / "bench")


def load_in_process(model: Path, threads: int):
    import llama_cpp

    # Exactly what meshdesk.adapters.llama.host.load_model does.
    return llama_cpp.Llama(model_path=str(model), n_ctx=CONTEXT, n_threads=threads,
                           n_threads_batch=threads, n_gpu_layers=0, verbose=False)


def run_in_process(llama, prompt: str, max_tokens: int, repetition: int) -> Run:
    chunks, parts = 0, []
    first = last = None
    start = time.perf_counter()
    # The model host resets before a seeded request (a reused prompt prefix changes the batch
    # shapes and so the logits' last bits); do the same, or greedy outputs drift apart.
    llama.reset()
    stream = llama.create_completion(prompt=prompt, max_tokens=max_tokens, temperature=0,
                                     top_p=TOP_P, seed=SEED, stream=True)
    for chunk in stream:
        text = chunk["choices"][0].get("text") or ""
        if text:
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
            chunks += 1
            parts.append(text)
    return finished_run(LOCAL_SIDE, prompt, repetition, chunks, start, first, last, parts, None)


def run_api(client, model_id: str, prompt: str, max_tokens: int, repetition: int) -> Run:
    chunks, parts, usage = 0, [], None
    first = last = None
    start = time.perf_counter()
    stream = client.completions.create(model=model_id, prompt=prompt, max_tokens=max_tokens,
                                       temperature=0, top_p=TOP_P, seed=SEED, stream=True,
                                       stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        text = chunk.choices[0].text if chunk.choices else ""
        if text:
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
            chunks += 1
            parts.append(text)
    return finished_run(API_SIDE, prompt, repetition, chunks, start, first, last, parts, usage)


def finished_run(side, prompt, repetition, chunks, start, first, last, parts, usage) -> Run:
    if first is None:
        raise RuntimeError(f"{side}: no text streamed for prompt {prompt!r}")
    return Run(side, prompt, repetition, chunks, first - start, last - first, "".join(parts), usage)


def start_ready_node(home: Path, model: Path, threads: int, timeout: float) -> NodeProcess:
    """A headless node (as tests/nodes.py starts them), stopped again if it never gets ready."""
    command = meshdesk_command("--headless", "--home", str(home), "--port", "0",
                               "--model", str(model), "--threads", str(threads),
                               "--speculative", "off")  # the in-process side is a plain Llama
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=test_environment())
    try:
        node = NodeProcess(process, home)  # waits for the `API: http://127.0.0.1:PORT/v1` line
    except BaseException:
        process.kill()
        process.wait()
        raise
    try:
        node.wait_until_ready(timeout)  # polls /api/status until models[0].state == "ready"
    except BaseException:
        node.stop()
        raise
    return node


def median(values) -> float:
    values = [value for value in values if not math.isnan(value)]
    return statistics.median(values) if values else math.nan


def spread(values) -> float:
    """(max - min) / median: how far apart a side's runs landed."""
    values = [value for value in values if not math.isnan(value)]
    middle = median(values)
    return (max(values) - min(values)) / middle if values and middle else math.nan


def measure(arguments, llama, client, model_id: str) -> list[Run]:
    # Warm-up, not counted: the first generation on each side pays one-off costs.
    run_api(client, model_id, PROMPTS[0], 8, -1)
    run_in_process(llama, PROMPTS[0], 8, -1)
    runs: list[Run] = []
    pair = 0
    for repetition in range(arguments.repetitions):
        for prompt in PROMPTS:
            # Alternate which side goes first, so neither always runs right after the other.
            order = (API_SIDE, LOCAL_SIDE) if pair % 2 == 0 else (LOCAL_SIDE, API_SIDE)
            pair += 1
            for side in order:
                if side == API_SIDE:
                    run = run_api(client, model_id, prompt, arguments.max_tokens, repetition)
                else:
                    run = run_in_process(llama, prompt, arguments.max_tokens, repetition)
                run.went_first = side == order[0]
                runs.append(run)
                print(f"  rep {repetition + 1}  {side:<10}  {prompt[:34]:<34}  {run.chunks:>4} tok  "
                      f"{run.tokens_per_second:7.1f} tok/s  ttft {run.ttft * 1000:6.1f} ms", flush=True)
    return runs


def report(runs: list[Run], arguments, load_before: tuple[float, float, float]) -> None:
    sides = (API_SIDE, LOCAL_SIDE)
    print()
    print(f"per prompt (median over {arguments.repetitions} repetition(s), tok/s):")
    print(f"  {'prompt':<44} {API_SIDE:>9} {LOCAL_SIDE:>11} {'ratio':>6}")
    for prompt in PROMPTS:
        rates = {side: median(r.tokens_per_second for r in runs if r.side == side and r.prompt == prompt)
                 for side in sides}
        ratio = rates[API_SIDE] / rates[LOCAL_SIDE] if rates[LOCAL_SIDE] else math.nan
        print(f"  {prompt[:44]:<44} {rates[API_SIDE]:9.1f} {rates[LOCAL_SIDE]:11.1f} {ratio:6.2f}")

    print()
    print(f"  {'side':<12} {'runs':>4} {'tok/run':>8} {'median tok/s':>13} {'spread':>7} {'median TTFT':>12}"
          f"   {'(going 1st / 2nd in pair)'}")
    summary = {}
    for side in sides:
        mine = [r for r in runs if r.side == side]
        rates = [r.tokens_per_second for r in mine]
        summary[side] = (median(rates), spread(rates))
        print(f"  {side:<12} {len(mine):>4} {median(r.chunks for r in mine):>8.0f} "
              f"{summary[side][0]:>13.1f} {summary[side][1]:>6.0%} "
              f"{median(r.ttft for r in mine) * 1000:>9.1f} ms   "
              f"({median(r.ttft for r in mine if r.went_first) * 1000:.1f} / "
              f"{median(r.ttft for r in mine if not r.went_first) * 1000:.1f} ms)")

    # Sanity: greedy decoding on the same model and prompt must give the same text and count;
    # a difference means the node's model host no longer runs what this baseline runs.
    local = {(r.prompt, r.repetition): r for r in runs if r.side == LOCAL_SIDE}
    mismatched = sum(1 for r in runs if r.side == API_SIDE
                     and (r.text != local[(r.prompt, r.repetition)].text
                          or r.chunks != local[(r.prompt, r.repetition)].chunks))
    usage_off = sum(1 for r in runs if r.side == API_SIDE and r.usage_tokens is not None
                    and r.usage_tokens != r.chunks)
    print()
    print(f"  identical text and chunk counts on both sides: "
          f"{'yes' if not mismatched else f'NO ({mismatched} of {len(local)} pairs differ)'}")
    if usage_off:
        print(f"  note: in {usage_off} API run(s) usage.completion_tokens differs from the chunk count "
              f"(re-tokenized text); tokens/s uses chunk counts on both sides")
    load_after = os.getloadavg()
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} cores, --threads {arguments.threads}")
    reasons = (["quick run"] if arguments.quick else []) + [
        f"{side} runs spread {summary[side][1]:.0%}" for side in sides if summary[side][1] > NOISY_SPREAD]
    busy_load = (os.cpu_count() or 1) - arguments.threads  # more than this leaves us short of cores
    if max(load_before[0], load_after[0]) > busy_load:
        reasons.append(f"other work running: load average above {busy_load}")
    if reasons:
        print(f"  WARNING: numbers may be noisy ({', '.join(reasons)})")

    ratio = summary[API_SIDE][0] / summary[LOCAL_SIDE][0] if summary[LOCAL_SIDE][0] else math.nan
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print()
    print(f"ratio (api / in-process) = {ratio:.3f}  target >= {TARGET_RATIO:.2f}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    load_before = os.getloadavg()
    model = arguments.model or bundled_model()
    if not model.is_file():
        print(f"error: no model file at {model}", file=sys.stderr)
        return 1
    print(f"model {model}  threads {arguments.threads}  max_tokens {arguments.max_tokens}  "
          f"repetitions {arguments.repetitions}  prompts {len(PROMPTS)}  temperature 0  "
          f"top_p {TOP_P}  seed {SEED}", flush=True)
    node = None
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-") as home:
        try:
            started = time.perf_counter()
            node = start_ready_node(Path(home), model, arguments.threads, arguments.ready_timeout)
            print(f"node ready at {node.base_url} after {time.perf_counter() - started:.1f} s", flush=True)
            client = node.client()
            model_id = client.models.list().data[0].id
            llama = load_in_process(model, arguments.threads)
            runs = measure(arguments, llama, client, model_id)
            report(runs, arguments, load_before)
        except Exception:
            traceback.print_exc()
            if node is not None:
                print(f"node: {node.describe()}", file=sys.stderr)
            return 1
        finally:
            if node is not None:
                node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
