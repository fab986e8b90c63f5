"""Does a batch cross the network once for all? Round trips per generated token on a split, 1/4/8 streams.

A split costs every decoding step one round trip per remote member (docs/architecture.md, "Round
trips of a split"). With continuous batching (issue 16) one step decodes a token for every
active stream, so the round trip is shared: per generated token it should fall as 1 / streams.

One run starts the split of `bench/latency.py`, MeshDesk side only: node A seeds the model with
`--split --tensor-split 1,1` and hosts it, node B joins with its own copy and a lower `--max-vram`;
A's data link to B crosses a delaying proxy (`tests/delay_proxy.py`, put in by the test-only
MESHDESK_TEST_DATA_ROUTES). A gets `--parallel N` when this MeshDesk has the option. Then, for
each delay (set on the proxy at runtime) and round, N concurrent streaming completions for each
stream count N, the counts in rotation, with the official `openai` AsyncOpenAI client.

    .venv/bin/python bench/batch_split.py            # streams 1,4,8 at delays 0,5,10,20 ms, 2 rounds x 32 tokens
    .venv/bin/python bench/batch_split.py --quick    # streams 1,4 at 20 ms, 1 round x 8 tokens (smoke test)

Round trips are the proxy's count (what the host's tunnel counts, contract C1: bytes back from a
member after bytes were sent to it) during a level; per generated token = that over all its
streams' tokens (their prompt passes included). A's own count (`/api/status` traffic.round_trips)
is shown beside it. Tokens are streamed text chunks; tok/s is all streams' tokens over the
level's wall time (aggregate) and, per stream, first chunk to last.

Exit code 0 whatever the numbers (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
for folder in (BENCH.parent, BENCH):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import concurrency  # noqa: E402  (the streaming clients, the --parallel option)
import latency  # noqa: E402  (its delays and its wait for a ready, proxied split)
import split as split_bench  # noqa: E402  (node starting, stopping, failing)
from tests.latency_tools import proxied_members, routes_environment  # noqa: E402

DEFAULT_STREAMS = (1, 4, 8)
QUICK_STREAMS = (1, 4)
QUICK_DELAYS_MS = (20.0,)
ATTEMPTS = 5  # runs of one level, when re-plans keep cutting it short


@dataclass
class Sample:
    """One level (N concurrent streams) at one delay, with the round trips the link carried meanwhile."""

    streams: int
    delay_ms: float
    level: concurrency.Level
    proxy_round_trips: int
    status_round_trips: int

    @property
    def tokens(self) -> int:
        return self.level.tokens


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="GGUF to benchmark (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each node (default 1)")
    parser.add_argument("--streams", type=concurrency.levels, default=DEFAULT_STREAMS, metavar="N,N,...",
                        help="concurrent streams per level (default 1,4,8; 1 is added)")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="A's --parallel, when it has the option (default: the largest stream count)")
    parser.add_argument("--delays", type=latency.delays, default=latency.DEFAULT_DELAYS_MS, metavar="MS,MS,...",
                        help="one-way host-to-member delays in ms (default 0,5,10,20)")
    parser.add_argument("--repetitions", type=int, default=2, help="rounds over the stream counts per delay (default 2)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per completion (default 32)")
    parser.add_argument("--quick", action="store_true", help="streams 1,4 at 20 ms, one round of 8 tokens (a smoke test)")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for the split to be ready (default 180)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.streams, arguments.delays = QUICK_STREAMS, QUICK_DELAYS_MS
        arguments.repetitions, arguments.max_tokens = 1, 8
    if 1 not in arguments.streams:
        arguments.streams = (1, *arguments.streams)  # every figure is read against one stream alone
    arguments.parallel = arguments.parallel or max(arguments.streams)
    arguments.members = 2  # what latency.wait_for_split checks
    if min(arguments.threads, arguments.repetitions, arguments.parallel) < 1 or arguments.max_tokens < 2:
        parser.error("--threads, --parallel and --repetitions must be >= 1, --max-tokens >= 2")
    return arguments


# --- the split ------------------------------------------------------------------------------------


def start_split(root: Path, model: Path, arguments, nodes: list, proxies: list):
    """Node A hosting the split with --parallel, member B joined through a proxy on A's link to it."""
    (member,) = proxied_members(1)
    proxies.append(member.proxy)
    common = ["--split", "--tensor-split", "1,1", "--threads", str(arguments.threads), "--speculative", "off"]
    node_a = split_bench.start_node(root / "node-a", "--model", str(model), *common,
                                    *concurrency.node_parallel(arguments.parallel),
                                    environment=routes_environment([member]))
    nodes.append(node_a)
    home_b = root / "node-b"
    (home_b / "models").mkdir(parents=True)
    os.link(model, home_b / "models" / model.name)  # B's own copy, as a friend's would be
    nodes.append(split_bench.start_node(home_b, "--join", node_a.invite_token(), "--max-vram",
                                        str(split_bench.B_MAX_VRAM_GB), "--bind-port", str(member.mesh_port), *common))
    plan = latency.wait_for_split(node_a, arguments, nodes, [member.proxy])
    return node_a, member.proxy, plan


def layout(node_a) -> tuple:
    """What a re-plan changes: the model host's pid and the device order."""
    status = node_a.status()
    plans, models = status.get("plans") or [{}], status.get("models") or [{}]
    return models[0].get("pid"), models[0].get("state"), [m["id"] for m in plans[0].get("members", [])]


# --- measuring ------------------------------------------------------------------------------------


def sample(node_a, proxy, arguments, nodes, model_id: str, streams: int, delay_ms: float, round_number: int) -> Sample:
    """One level, taken again when the split was planned again meanwhile (a re-plan restarts the
    model host: the level would have measured a reload)."""
    for _ in range(ATTEMPTS):
        latency.wait_for_split(node_a, arguments, nodes, [proxy])
        concurrency.wait_until_idle(node_a)
        before_layout, before_proxy, before_status = layout(node_a), proxy.counters(), node_a.status()
        try:
            level = asyncio.run(concurrency.run_level(node_a.base_url, model_id, streams, round_number,
                                                      arguments.max_tokens))
        except Exception as error:  # 503 "loading": the host restarted under this level
            if getattr(error, "status_code", None) != 503 and layout(node_a) == before_layout:
                raise
            continue
        if layout(node_a) == before_layout:
            after_proxy, after_status = proxy.counters(), node_a.status()
            return Sample(streams, delay_ms, level, after_proxy["round_trips"] - before_proxy["round_trips"],
                          after_status["traffic"]["round_trips"] - before_status["traffic"]["round_trips"])
    raise RuntimeError(f"the split was planned again during {ATTEMPTS} tries of one level")


def measure(node_a, proxy, arguments, nodes, model_id: str) -> list[Sample]:
    asyncio.run(concurrency.run_level(node_a.base_url, model_id, 1, -1, 8))  # warm-up, not counted
    samples: list[Sample] = []
    order = list(arguments.streams)
    turn = 0
    for delay_ms in arguments.delays:
        proxy.set_delay(delay_ms / 1000)
        for round_number in range(arguments.repetitions):
            for streams in order[turn % len(order):] + order[:turn % len(order)]:
                taken = sample(node_a, proxy, arguments, nodes, model_id, streams, delay_ms, round_number)
                samples.append(taken)
                rejected = sum(stream.rejected for stream in taken.level.streams)
                print(f"  {delay_ms:5.1f} ms  {streams:>2} streams  {taken.tokens:>4} tok  "
                      f"{taken.tokens / taken.level.seconds:6.1f} tok/s  round trips {taken.proxy_round_trips:>4} "
                      f"({taken.proxy_round_trips / max(1, taken.tokens):.2f}/tok)  429s {rejected}", flush=True)
            turn += 1
    return samples


# --- reporting ------------------------------------------------------------------------------------


def figures(samples: list[Sample]) -> dict:
    tokens = sum(s.tokens for s in samples) or 1
    per_stream = [rate for s in samples for rate in (stream.tokens_per_second for stream in s.level.streams)
                  if rate == rate]  # NaN != NaN: streams with fewer than 2 chunks
    return {"round_trips_per_token": sum(s.proxy_round_trips for s in samples) / tokens,
            "status_per_token": sum(s.status_round_trips for s in samples) / tokens,
            "aggregate_tokens_per_second": statistics.median(s.tokens / s.level.seconds for s in samples),
            "per_stream_tokens_per_second": statistics.median(per_stream) if per_stream else float("nan"),
            "rejected_429": sum(stream.rejected for s in samples for stream in s.level.streams)}


def report(arguments, samples: list[Sample], load_before, parallel: list[str]) -> None:
    table = {(streams, delay): figures([s for s in samples if s.streams == streams and s.delay_ms == delay])
             for delay in arguments.delays for streams in arguments.streams}
    print()
    print("per delay and stream count (round trips per generated token to the remote member B; tok/s medians):")
    print(f"  {'one-way':>7}  {'streams':>7}  {'round trips/tok':>15}  {'A counts/tok':>12}  {'x 1 stream':>10}  "
          f"{'aggregate tok/s':>15}  {'per-stream tok/s':>16}  {'429s':>4}")
    for delay in arguments.delays:
        alone = table[(1, delay)]["round_trips_per_token"]
        for streams in arguments.streams:
            row = table[(streams, delay)]
            print(f"  {delay:5.1f} ms  {streams:>7}  {row['round_trips_per_token']:>15.2f}  {row['status_per_token']:>12.2f}  "
                  f"{row['round_trips_per_token'] / alone if alone else float('nan'):>10.2f}  "
                  f"{row['aggregate_tokens_per_second']:>15.1f}  {row['per_stream_tokens_per_second']:>16.1f}  "
                  f"{row['rejected_429']:>4}")
    load_after = os.getloadavg()
    print(f"  A: --threads {arguments.threads} {' '.join(parallel) or '(no --parallel option: one request at a time)'}, "
          f"speculation off, {arguments.max_tokens} tokens per stream, {arguments.repetitions} round(s)")
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores")
    if arguments.quick or load_before[0] > 0.5:
        print("  WARNING: numbers may be noisy (" + ", ".join(
            (["quick run"] if arguments.quick else []) +
            ([f"load average {load_before[0]:.2f} before the run"] if load_before[0] > 0.5 else [])) + ")")
    print()
    top = max(arguments.streams)
    last = max(arguments.delays)
    print(f"round trips per generated token per remote member at {last:g} ms: 1 stream "
          f"{table[(1, last)]['round_trips_per_token']:.2f}, {top} streams {table[(top, last)]['round_trips_per_token']:.2f}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, split_bench.stop_on_signal)
    load_before = os.getloadavg()
    model = arguments.model or concurrency.bundled_model()
    if not model.is_file():
        print(f"error: no model file at {model}", file=sys.stderr)
        return 1
    parallel = concurrency.node_parallel(arguments.parallel)
    print(f"model {model}  threads {arguments.threads}  streams {','.join(map(str, arguments.streams))}  delays "
          f"{','.join(f'{d:g}' for d in arguments.delays)} ms one-way A->B  max_tokens {arguments.max_tokens}  "
          f"rounds {arguments.repetitions}  temperature 0  A {' '.join(parallel) or 'without --parallel'}", flush=True)
    nodes, proxies = [], []
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-batch-split-") as folder:
        try:
            node_a, proxy, plan = start_split(Path(folder), model, arguments, nodes, proxies)
            print(f"split ready: shares {[member['share'] for member in plan['members']]} (device order, A last)",
                  flush=True)
            model_id = node_a.client().models.list().data[0].id
            samples = measure(node_a, proxy, arguments, nodes, model_id)
            report(arguments, samples, load_before, parallel)
        except (Exception, split_bench.Stopped, KeyboardInterrupt):
            return split_bench.failed(nodes)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleaning up; do not stop half-way
            for node in nodes:  # A first: B stopping first would make A re-plan and reload
                node.stop()
            for proxy in proxies:
                proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
