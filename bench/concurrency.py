"""Several friends at once: streaming throughput of one node under 1, 4, 8 and 32 concurrent clients.

One run starts a real node (`python -m meshdesk --headless`, a temporary home, ephemeral ports) on
the bundled SmolLM2-135M-Instruct and, in rounds, sends it N streaming completions at once with
the official `openai` AsyncOpenAI client, for every level N side by side. The levels take turns
within each round and the order rotates from round to round, so machine noise hits all alike.
The client never retries (`max_retries=0`): a 429 (the node's queue full) is counted and shown,
not hidden behind a retry.

    .venv/bin/python bench/concurrency.py            # levels 1,4,8,32 x 3 rounds x 32 tokens
    .venv/bin/python bench/concurrency.py --quick    # levels 1,4 x 1 round x 8 tokens (smoke test)

Then, in this process, the limit batching can reach here: what ONE `llama_decode` of 8 tokens
(8 sequences, one token each) costs against 8 single-token `llama_decode` calls, with
llama-cpp-python's low-level API on the same model and threads.

Tokens are streamed chunks that carry text (the model host sends one per sampled token).
Aggregate tok/s = all streams' tokens over the level's wall time (requests sent to the last
token of any stream: queueing and prompts included, as the friends live it); time to first
token (TTFT) from sending to the first text chunk; per-stream tok/s from a stream's first
chunk to its last.

Exit code 0 whatever the verdicts (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.nodes import NodeProcess, start_node  # noqa: E402

# Different openings, so no stream rides on another's cached prompt; open-ended, so greedy
# decoding rarely stops before max_tokens.
PROMPTS = (
    "Once upon a time, in a village by the sea,",
    "The history of the Roman Empire begins",
    "Here is a recipe for chocolate chip cookies:",
    "def fibonacci(n):",
    "Dear friend, I am writing to tell you about",
    "The three most important inventions of the last century are",
    "In the year 2150, the first city on Mars",
    "A guide to growing tomatoes at home. Step one:",
)
DEFAULT_LEVELS = (1, 4, 8, 32)
QUICK_LEVELS = (1, 4)
GOAL_LEVEL, GOAL_RATIO, GOAL_TTFT_SECONDS = 8, 3.0, 2.0
MICRO_SEQUENCES = 8   # the batched decode: this many sequences, one token each
MICRO_DEPTH = 32      # tokens already in each sequence's KV cache when the step is timed
MICRO_BATCHES = (1, 2, 4, 8)  # batch sizes timed too, to see how a step's cost grows
CONTEXT_PER_SEQUENCE = 256  # the microbench's KV cache: plenty for MICRO_DEPTH + 1
IDLE_SECONDS = 60.0   # how long to wait for the node to finish a level's leftovers


@dataclass
class Stream:
    """One client's streaming completion within one level of one round."""

    level: int
    round: int
    index: int
    sent: float               # perf_counter when the request went out
    first: float | None = None
    last: float | None = None
    chunks: int = 0
    rejected: bool = False    # 429: the node's queue was full
    retry_after: str | None = None

    @property
    def ttft(self) -> float:
        return self.first - self.sent if self.first is not None else math.nan

    @property
    def tokens_per_second(self) -> float:
        if self.chunks < 2 or self.last is None or self.last <= self.first:
            return math.nan
        return (self.chunks - 1) / (self.last - self.first)


@dataclass
class Level:
    """One level of one round: its streams and its wall time."""

    level: int
    round: int
    streams: list[Stream]
    seconds: float            # first request sent to the last token of any stream

    @property
    def tokens(self) -> int:
        return sum(stream.chunks for stream in self.streams)


def levels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of stream counts: {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"stream counts are >= 1: {text!r}")
    return values


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="GGUF to benchmark (default: the bundled SmolLM2-135M-Instruct, linked "
                             "into ~/.cache/meshdesk/bench)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for the node's model host and the microbench (default 1: the "
                             "other core runs the clients and the node's event loop)")
    parser.add_argument("--levels", type=levels, default=DEFAULT_LEVELS, metavar="N,N,...",
                        help="concurrent streams per level (default 1,4,8,32; 1 is added)")
    parser.add_argument("--parallel", type=int, default=GOAL_LEVEL, metavar="N",
                        help="the node's --parallel (sequences decoded together), when it has the "
                             f"option (default {GOAL_LEVEL})")
    parser.add_argument("--repetitions", type=int, default=3, help="rounds over all levels (default 3)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per completion (default 32)")
    parser.add_argument("--decode-repetitions", type=int, default=30,
                        help="timed rounds of the microbench, each kind once per round (default 30)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--quick", action="store_true",
                        help="levels 1,4, one round of 8 tokens, 3 microbench rounds (a smoke test)")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for the node's model to be ready (default 180)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.levels, arguments.repetitions, arguments.max_tokens = QUICK_LEVELS, 1, 8
        arguments.decode_repetitions = 3
    if 1 not in arguments.levels:
        arguments.levels = (1, *arguments.levels)  # every ratio is to one stream alone
    if min(arguments.threads, arguments.repetitions, arguments.decode_repetitions, arguments.parallel) < 1 \
            or arguments.max_tokens < 2:
        parser.error("--threads, --parallel, --repetitions and --decode-repetitions must be >= 1, "
                     "--max-tokens >= 2")
    return arguments


def bundled_model() -> Path:
    """SmolLM2-135M-Instruct, the node's default model, linked once into ~/.cache/meshdesk/bench."""
    from meshdesk.adapters.bundled_smollm2 import install_smollm2

    return install_smollm2(Path.home() / ".cache" / "meshdesk" / "bench")


# --- the node -------------------------------------------------------------------------------------


def node_parallel(parallel: int) -> list[str]:
    """`--parallel N` for the node, when this MeshDesk's command line has it (issue 16)."""
    from meshdesk.app.cli import build_parser

    has_option = any("--parallel" in action.option_strings for action in build_parser()._actions)
    return ["--parallel", str(parallel)] if has_option else []


def start_ready_node(home: Path, model: Path, arguments) -> NodeProcess:
    """A headless node on the model, plain decoding (speculation off), stopped if it never gets ready."""
    node = start_node(home, "--model", str(model), "--threads", str(arguments.threads),
                      "--speculative", "off", *node_parallel(arguments.parallel))
    try:
        node.wait_until_ready(arguments.ready_timeout)
    except BaseException:
        node.stop()
        raise
    return node


def wait_until_idle(node: NodeProcess) -> None:
    """Until the node reports nothing running or queued, where it reports that (issue 16's status
    fields): a level that starts while the last one's streams still finish would pay for them."""
    deadline = time.monotonic() + IDLE_SECONDS
    while time.monotonic() < deadline:
        models = node.status().get("models") or [{}]
        if not models[0].get("active") and not models[0].get("queued"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the node was still busy {IDLE_SECONDS:.0f} s after a level: {models[0]}")


# --- the clients ----------------------------------------------------------------------------------


async def one_stream(client, model_id: str, stream: Stream, max_tokens: int) -> None:
    import openai

    stream.sent = time.perf_counter()
    try:
        answer = await client.completions.create(model=model_id, prompt=PROMPTS[stream.index % len(PROMPTS)],
                                                 max_tokens=max_tokens, temperature=0, stream=True)
        async for chunk in answer:
            if chunk.choices and chunk.choices[0].text:
                now = time.perf_counter()
                stream.first = stream.first if stream.first is not None else now
                stream.last = now
                stream.chunks += 1
    except openai.RateLimitError as error:
        stream.rejected = True
        stream.retry_after = error.response.headers.get("Retry-After")
        return
    if stream.first is None:
        raise RuntimeError(f"stream {stream.index} of level {stream.level}: no text streamed")


async def run_level(base_url: str, model_id: str, level: int, round_number: int, max_tokens: int) -> Level:
    import openai

    # A fresh client per level: no stream reuses a connection a previous level left open. Its pool
    # (openai's default, 1000 connections) gives every stream its own.
    async with openai.AsyncOpenAI(base_url=base_url, api_key="meshdesk", max_retries=0, timeout=300) as client:
        streams = [Stream(level, round_number, index, 0.0) for index in range(level)]
        started = time.perf_counter()
        await asyncio.gather(*(one_stream(client, model_id, stream, max_tokens) for stream in streams))
    ends = [stream.last for stream in streams if stream.last is not None]
    return Level(level, round_number, streams, (max(ends) if ends else time.perf_counter()) - started)


def measure(arguments, node: NodeProcess, model_id: str) -> list[Level]:
    asyncio.run(run_level(node.base_url, model_id, 1, -1, 8))  # warm-up, not counted
    results: list[Level] = []
    order = list(arguments.levels)
    for round_number in range(arguments.repetitions):
        rotated = order[round_number % len(order):] + order[:round_number % len(order)]
        for level in rotated:
            wait_until_idle(node)
            result = asyncio.run(run_level(node.base_url, model_id, level, round_number, arguments.max_tokens))
            results.append(result)
            rejected = sum(stream.rejected for stream in result.streams)
            print(f"  round {round_number + 1}  {level:>3} streams  {result.tokens:>5} tok in {result.seconds:6.2f} s"
                  f"  {result.tokens / result.seconds:7.1f} tok/s  TTFT max "
                  f"{max_or_nan(s.ttft for s in result.streams):6.2f} s  429s {rejected}", flush=True)
    return results


# --- the limit: one batched llama_decode against single ones --------------------------------------


def decode_limit(model: Path, threads: int, repetitions: int) -> dict:
    """Milliseconds of one llama_decode of MICRO_SEQUENCES tokens (one per sequence, each at depth
    MICRO_DEPTH), of MICRO_SEQUENCES single-token llama_decode calls in a row, and of the batches
    in between (MICRO_BATCHES): medians over rounds in which the kinds take turns, in rotation."""
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load log is noise here
    llama_cpp.llama_backend_init()
    model_parameters = llama_cpp.llama_model_default_params()
    model_parameters.n_gpu_layers = 0
    loaded = llama_cpp.llama_model_load_from_file(str(model).encode(), model_parameters)
    if not loaded:
        raise RuntimeError(f"llama.cpp could not load {model}")
    context_parameters = llama_cpp.llama_context_default_params()
    context_parameters.n_ctx = CONTEXT_PER_SEQUENCE * MICRO_SEQUENCES
    context_parameters.n_seq_max = MICRO_SEQUENCES
    context_parameters.kv_unified = True  # as the model host's (adapters/llama/host.py, `sequences`)
    context_parameters.n_threads = context_parameters.n_threads_batch = threads
    context = llama_cpp.llama_init_from_model(loaded, context_parameters)
    batch = llama_cpp.llama_batch_init(max(MICRO_DEPTH, MICRO_SEQUENCES), 0, MICRO_SEQUENCES)
    try:
        for sequence in range(MICRO_SEQUENCES):  # each sequence its own prompt, as each friend's
            decode(context, batch, [(token, position, sequence, position == MICRO_DEPTH - 1)
                                    for position, token in enumerate(prompt_tokens(loaded, sequence))])
        timings = timed_steps(context, batch, repetitions)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(context)
        llama_cpp.llama_model_free(loaded)
    medians = {kind: statistics.median(values) for kind, values in timings.items()}
    return {"sequences": MICRO_SEQUENCES, "depth": MICRO_DEPTH, "threads": threads, "rounds": repetitions,
            "batched_ms": medians[MICRO_SEQUENCES], "singles_ms": medians["singles"],
            "batch_ms": {size: medians[size] for size in MICRO_BATCHES}}


def timed_steps(context, batch, repetitions: int) -> dict:
    """Milliseconds per kind of step (a batch size, or "singles"), each step taken from the same
    KV depth: what a step adds is removed again before the next."""
    import llama_cpp

    memory = llama_cpp.llama_get_memory(context)
    kinds = [MICRO_SEQUENCES, "singles", *(size for size in MICRO_BATCHES if size != MICRO_SEQUENCES)]
    timings = {kind: [] for kind in kinds}
    for repetition in range(repetitions + 1):  # the first round warms up, not counted
        for kind in kinds[repetition % len(kinds):] + kinds[:repetition % len(kinds)]:
            size = MICRO_SEQUENCES if kind == "singles" else kind
            step = [(100 + sequence, MICRO_DEPTH, sequence, True) for sequence in range(size)]
            started = time.perf_counter()
            for entries in ([[entry] for entry in step] if kind == "singles" else [step]):
                decode(context, batch, entries)
            seconds = time.perf_counter() - started
            llama_cpp.llama_memory_seq_rm(memory, -1, MICRO_DEPTH, -1)
            if repetition:
                timings[kind].append(seconds * 1000)
    return timings


def prompt_tokens(loaded, sequence: int) -> list[int]:
    """MICRO_DEPTH tokens of one of the prompts, repeated as needed."""
    import llama_cpp

    text = " ".join([PROMPTS[sequence % len(PROMPTS)]] * 8).encode()
    buffer = (llama_cpp.llama_token * (len(text) + 8))()
    count = llama_cpp.llama_tokenize(llama_cpp.llama_model_get_vocab(loaded), text, len(text), buffer,
                                     len(buffer), True, False)
    if count < MICRO_DEPTH:
        raise RuntimeError(f"the microbench's prompt has {count} tokens, fewer than {MICRO_DEPTH}")
    return list(buffer[:MICRO_DEPTH])


def decode(context, batch, entries: list[tuple[int, int, int, bool]]) -> None:
    """One llama_decode of (token, position, sequence, wants logits) entries."""
    import llama_cpp

    batch.n_tokens = len(entries)
    for slot, (token, position, sequence, logits) in enumerate(entries):
        batch.token[slot], batch.pos[slot] = token, position
        batch.n_seq_id[slot], batch.seq_id[slot][0] = 1, sequence
        batch.logits[slot] = logits
    result = llama_cpp.llama_decode(context, batch)
    if result != 0:
        raise RuntimeError(f"llama_decode returned {result}")


# --- reporting ------------------------------------------------------------------------------------


def max_or_nan(values) -> float:
    values = [value for value in values if not math.isnan(value)]
    return max(values) if values else math.nan


def percentile(values, fraction: float) -> float:
    """The nearest-rank percentile: p99 of 24 values is the largest, not an interpolation."""
    values = sorted(value for value in values if not math.isnan(value))
    if not values:
        return math.nan
    return values[max(0, math.ceil(fraction * len(values)) - 1)]


def level_figures(results: list[Level], level: int) -> dict:
    mine = [result for result in results if result.level == level]
    streams = [stream for result in mine for stream in result.streams]
    rates = [result.tokens / result.seconds for result in mine if result.seconds > 0]
    ttfts = [stream.ttft for stream in streams if not stream.rejected]
    return {"level": level, "rounds": len(mine), "streams": len(streams),
            "aggregate_tokens_per_second": statistics.median(rates) if rates else math.nan,
            "ttft_p50_seconds": percentile(ttfts, 0.50), "ttft_p99_seconds": percentile(ttfts, 0.99),
            "per_stream_tokens_per_second": statistics.median(
                [rate for rate in (s.tokens_per_second for s in streams) if not math.isnan(rate)] or [math.nan]),
            "tokens_per_stream": statistics.median([s.chunks for s in streams if not s.rejected] or [0]),
            "rejected_429": sum(stream.rejected for stream in streams),
            "retry_after": sorted({stream.retry_after for stream in streams if stream.retry_after})}


def report(arguments, results: list[Level], limit: dict, load_before, parallel: list[str]) -> dict:
    table = {level: level_figures(results, level) for level in arguments.levels}
    print()
    print(f"per level (medians over {arguments.repetitions} round(s); TTFT percentiles over all streams):")
    print(f"  {'streams':>7} {'aggregate tok/s':>15} {'vs 1':>6} {'TTFT p50':>9} {'TTFT p99':>9} "
          f"{'per-stream tok/s':>16} {'tok/stream':>10} {'429s':>5}")
    base = table[1]["aggregate_tokens_per_second"]
    for level, row in table.items():
        ratio = row["aggregate_tokens_per_second"] / base if base else math.nan
        print(f"  {level:>7} {row['aggregate_tokens_per_second']:>15.1f} {ratio:>6.2f} "
              f"{row['ttft_p50_seconds']:>8.2f}s {row['ttft_p99_seconds']:>8.2f}s "
              f"{row['per_stream_tokens_per_second']:>16.1f} {row['tokens_per_stream']:>10.0f} "
              f"{row['rejected_429']:>5}" + (f"  Retry-After {','.join(row['retry_after'])}" if row["retry_after"] else ""))
    print()
    print(f"  the limit here: one llama_decode of {limit['sequences']} tokens ({limit['sequences']} sequences at "
          f"depth {limit['depth']}) {limit['batched_ms']:.1f} ms, {limit['sequences']} single-token llama_decode "
          f"{limit['singles_ms']:.1f} ms, medians of {limit['rounds']} rounds, --threads {limit['threads']}")
    print("  llama_decode of N tokens (N sequences): " + ", ".join(
        f"N={size} {ms:.1f} ms ({ms / size:.1f} per token)" for size, ms in limit["batch_ms"].items()))
    load_after = os.getloadavg()
    print(f"  node: --threads {arguments.threads} {' '.join(parallel) or '(no --parallel option: one request at a time)'}"
          f", speculation off, {arguments.max_tokens} tokens per stream")
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores")
    if arguments.quick or load_before[0] > 0.5:
        print("  WARNING: numbers may be noisy (" + ", ".join(
            (["quick run"] if arguments.quick else []) +
            ([f"load average {load_before[0]:.2f} before the run"] if load_before[0] > 0.5 else [])) + ")")
    print()
    ceiling = batching_ceiling(limit, table[1]["per_stream_tokens_per_second"])
    print(f"one batched llama_decode of {limit['sequences']} / {limit['sequences']} single ones: "
          f"{limit['batched_ms'] / limit['singles_ms']:.3f} of the time, so the decoding itself goes at most "
          f"{limit['singles_ms'] / limit['batched_ms']:.2f}x faster batched")
    print(f"ceiling for {limit['sequences']} streams: {limit['sequences']} tokens per {limit['batched_ms']:.1f} ms step "
          f"= {ceiling * table[1]['per_stream_tokens_per_second']:.0f} tok/s at most, {ceiling:.2f}x one stream's "
          f"{table[1]['per_stream_tokens_per_second']:.1f} tok/s")
    verdicts(table)
    return {"levels": list(table.values()), "decode_limit": limit, "threads": arguments.threads,
            "batching_ceiling": ceiling, "node_options": parallel, "max_tokens": arguments.max_tokens, "rounds": arguments.repetitions,
            "load_before": load_before[0], "load_after": load_after[0],
            "runs": [asdict(result) for result in results]}


def batching_ceiling(limit: dict, one_stream_tokens_per_second: float) -> float:
    """The most `sequences` streams can get over one stream alone: a step of all of them takes at
    least one batched decode, whereas one stream's pace already includes the host's and the node's
    work around each token (sampling, text, sending), which a batch must still do per stream."""
    batched_tokens_per_second = limit["sequences"] / (limit["batched_ms"] / 1000)
    return batched_tokens_per_second / one_stream_tokens_per_second


def verdicts(table: dict) -> None:
    top = GOAL_LEVEL if GOAL_LEVEL in table else max(table)
    ratio = table[top]["aggregate_tokens_per_second"] / table[1]["aggregate_tokens_per_second"]
    if top != GOAL_LEVEL:
        print(f"aggregate tok/s {top} streams / 1 stream = {ratio:.2f} (the goal is for {GOAL_LEVEL} streams: "
              "not measured)")
        return
    ttft = table[GOAL_LEVEL]["ttft_p99_seconds"]
    print(f"aggregate tok/s {GOAL_LEVEL} streams / 1 stream = {ratio:.2f} target >= {GOAL_RATIO:.2f} "
          f"{'PASS' if ratio >= GOAL_RATIO else 'FAIL'}")
    print(f"p99 TTFT at {GOAL_LEVEL} streams = {ttft:.2f} s target < {GOAL_TTFT_SECONDS:.2f} s "
          f"{'PASS' if ttft < GOAL_TTFT_SECONDS else 'FAIL'}")


def without_nan(value):
    """`value` with NaN (a figure not measured) as null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(key): without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    load_before = os.getloadavg()
    model = arguments.model or bundled_model()
    if not model.is_file():
        print(f"error: no model file at {model}", file=sys.stderr)
        return 1
    parallel = node_parallel(arguments.parallel)
    print(f"model {model}  threads {arguments.threads}  levels {','.join(map(str, arguments.levels))}  "
          f"rounds {arguments.repetitions}  max_tokens {arguments.max_tokens}  temperature 0  "
          f"node {' '.join(parallel) or 'without --parallel'}", flush=True)
    node = None
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-concurrency-") as home:
        try:
            node = start_ready_node(Path(home), model, arguments)
            model_id = node.client().models.list().data[0].id
            results = measure(arguments, node, model_id)
            node.stop()  # the microbench gets the cores to itself
            node = None
            limit = decode_limit(model, arguments.threads, arguments.decode_repetitions)
            figures = report(arguments, results, limit, load_before, parallel)
            if arguments.json:
                arguments.json.write_text(json.dumps(without_nan(figures), indent=2))
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
