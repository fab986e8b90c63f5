"""What does link latency cost a split model? MeshDesk and direct llama.cpp RPC under added delay.

`tc netem` is not available on these kernels, so the delay comes from a user-space proxy
(`tests/delay_proxy.py`) on every host-to-member link, holding the bytes the host sends a
remote member for D ms (one way; the answers come back undelayed). One run starts both splits
once and keeps them loaded:

- **meshdesk**: a real mesh on 127.0.0.1. Node A seeds the model with `--split --tensor-split
  1,1[,1]` and hosts it; nodes B (and C, with `--members 3`) join with their own copies and a
  lower `--max-vram`. Each member binds a mesh port picked in advance, and A starts with the
  test-only `MESHDESK_TEST_DATA_ROUTES` pointing that port at the member's proxy, so A's data
  link to the member (TLS over TCP, the rpc tunnel) crosses the proxy. Requests go to A's API;
- **direct**: the same split without MeshDesk: one plain rpc worker per member and a model host
  with `--rpc` per worker, in A's device order and shares; every remote worker's `--rpc`
  endpoint is a proxy in front of it (the last worker stands in for A's own and is not delayed).

Then, for each delay (set on every proxy at runtime), it streams the same greedy completions
from both sides in turns, one at a time, and reads the proxies' counters around each run.

    .venv/bin/python bench/latency.py                 # delays 0,5,10,20 ms, 2 prompts x 2 x 48 tokens
    .venv/bin/python bench/latency.py --members 3     # a three-member split: two remote members
    .venv/bin/python bench/latency.py --quick         # delays 0 and 20 ms, 12 tokens (smoke test)

Tokens are counted as bench/split.py counts them (streamed pieces with text), tokens/s from
the first piece to the last. A round trip is what the host's tunnel counts (contract C1): bytes
back from a member after bytes were sent to it; per token = the proxies' round trips during a
run over the tokens it generated (its prompt pass included).

Exit code 0 whatever the numbers (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
for folder in (BENCH.parent, BENCH):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import split as split_bench  # noqa: E402  (its children, node starting and runs)
from tests.latency_tools import proxied_endpoint, proxied_members, routes_environment  # noqa: E402

MESHDESK, DIRECT = split_bench.MESHDESK, split_bench.DIRECT
SIDES = (MESHDESK, DIRECT)
PROMPTS = ("The history of the Roman Empire", "Once upon a time")
DEFAULT_DELAYS_MS = (0.0, 5.0, 10.0, 20.0)
QUICK_DELAYS_MS = (0.0, 20.0)
MEMBER_NAMES = "BCD"
ATTEMPTS = 5  # runs of one sample, when re-plans keep cutting it short
WORKER_ATTEMPTS, WORKER_READY_SECONDS = 3, 30.0


@dataclass
class Sample:
    """One run at one delay, with the round trips its link(s) carried meanwhile."""

    side: str
    delay_ms: float
    run: split_bench.Run
    member_round_trips: list[int]  # per remote member, from its proxy
    member_bytes: list[tuple[int, int]]  # per remote member: (to it, from it)
    status_round_trips: int | None  # MeshDesk's own count (A's traffic.round_trips)

    @property
    def tokens(self) -> int:
        return self.run.chunks


@dataclass
class Split:
    """One side, loaded: how to run a completion on it and the proxies on its remote links."""

    side: str
    proxies: list
    complete: object  # (prompt, max_tokens, repetition) -> split_bench.Run
    round_trips: object = None  # () -> int, MeshDesk's own count
    layout: object = lambda: None  # () -> what a re-plan changes (the model host's pid, the device order)
    settle: object = lambda: None  # () -> None: waits until the split is ready again
    replans: int = 0  # runs taken again because the split was planned again meanwhile


def delays(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of milliseconds: {text!r}") from None
    if not values or any(value < 0 or not math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"delays are milliseconds >= 0: {text!r}")
    return values


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="GGUF to benchmark (default: the bundled Gemma 3 270M, assembled into "
                             "~/.cache/meshdesk/bench; SmolLM2: meshdesk.adapters.bundled_smollm2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for every model host and rpc worker (default 1)")
    parser.add_argument("--members", type=int, choices=(2, 3), default=2,
                        help="devices in the split, the host's included (default 2)")
    parser.add_argument("--delays", type=delays, default=DEFAULT_DELAYS_MS, metavar="MS,MS,...",
                        help="one-way host-to-member delays in ms (default 0,5,10,20; 0 is added)")
    parser.add_argument("--repetitions", type=int, default=2, help="rounds over the prompts per delay (default 2)")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per completion (default 48)")
    parser.add_argument("--speculative", choices=("auto", "draft", "ngram", "off"), default="off",
                        help="the model hosts' speculation mode (default off: one token per pass)")
    parser.add_argument("--quick", action="store_true",
                        help="delays 0 and 20 ms, one repetition of 12 tokens (a smoke test)")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for each side to load (default 180)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.delays, arguments.repetitions, arguments.max_tokens = QUICK_DELAYS_MS, 1, 12
    if 0.0 not in arguments.delays:
        arguments.delays = (0.0, *arguments.delays)  # every ratio is to the side's own no-delay figure
    if arguments.threads < 1 or arguments.repetitions < 1 or arguments.max_tokens < 2:
        parser.error("--threads and --repetitions must be >= 1, --max-tokens >= 2")
    return arguments


# --- starting both splits ---------------------------------------------------------------------------


def node_speculation(mode: str) -> list[str]:
    """`--speculative MODE` for a node, when this MeshDesk's command line has it."""
    from meshdesk.app.cli import build_parser

    has_option = any("--speculative" in action.option_strings for action in build_parser()._actions)
    return ["--speculative", mode] if has_option else []


def start_meshdesk(root: Path, model: Path, arguments, nodes: list, proxies: list) -> tuple[Split, dict]:
    """Node A hosting the split, members B (C) joined through proxies on A's data links to them."""
    members = proxied_members(arguments.members - 1)
    proxies.extend(member.proxy for member in members)
    common = ["--split", "--tensor-split", ",".join("1" * arguments.members), "--threads", str(arguments.threads),
              *node_speculation(arguments.speculative)]
    node_a = split_bench.start_node(root / "node-a", "--model", str(model), *common,
                                    environment=routes_environment(members))
    nodes.append(node_a)
    token = node_a.invite_token()
    for name, member in zip(MEMBER_NAMES, members):
        home = root / f"node-{name.lower()}"
        (home / "models").mkdir(parents=True)
        os.link(model, home / "models" / model.name)  # the member's own copy, as a friend's would be
        nodes.append(split_bench.start_node(home, "--join", token, "--max-vram", str(split_bench.B_MAX_VRAM_GB),
                                            "--bind-port", str(member.mesh_port), *common))
    plan = wait_for_split(node_a, arguments, nodes, [member.proxy for member in members])
    client = node_a.client()
    model_id = client.models.list().data[0].id

    def complete(prompt: str, max_tokens: int, repetition: int) -> split_bench.Run:
        return split_bench.run_api(client, model_id, prompt, max_tokens, repetition)

    def round_trips() -> int:
        return node_a.status()["traffic"]["round_trips"]

    def layout() -> tuple:
        status = node_a.status()
        plans, models = status.get("plans") or [{}], status.get("models") or [{}]
        return models[0].get("pid"), models[0].get("state"), [m["id"] for m in plans[0].get("members", [])]

    def settle() -> None:
        wait_for_split(node_a, arguments, nodes, [member.proxy for member in members])

    proxies_in_order = [member.proxy for member in members]
    return Split(MESHDESK, proxies_in_order, complete, round_trips, layout, settle), plan


def wait_for_split(node_a, arguments, nodes: list, proxies: list) -> dict:
    """A's plan once its model host for a split of every member is ready, its links proxied."""
    deadline = time.monotonic() + arguments.ready_timeout
    while True:
        status = node_a.status()
        plan = split_bench.split_ready(status)
        if plan is not None and len(plan["members"]) == arguments.members:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no ready split of {arguments.members} on A after {arguments.ready_timeout:.0f} s: "
                               f"{status.get('plans')} {status.get('models')}")
        for node in nodes:
            if node.process.poll() is not None:
                raise RuntimeError(f"node exited: {node.describe()}")
        time.sleep(split_bench.POLL_SECONDS)
    if plan["host"] != status["node"]["id"] or plan["members"][-1]["id"] != plan["host"]:
        raise RuntimeError(f"A is not the split's host (last device): {plan}")
    unproxied = [index for index, proxy in enumerate(proxies) if proxy.counters()["connections"] == 0]
    if unproxied:
        raise RuntimeError(f"A's data link to member(s) {unproxied} did not cross its proxy: "
                           "MESHDESK_TEST_DATA_ROUTES was not applied")
    return plan


def start_direct(root: Path, model: Path, arguments, shares: list[float], children: list, proxies: list) -> Split:
    """Plain rpc workers, the remote ones behind proxies, and a model host in A's device order."""
    endpoints, remote = [], []
    for index in range(len(shares)):
        port = rpc_worker_port(root, index, arguments, children)
        if index < len(shares) - 1:  # a remote member's worker; the last stands in for the host's own
            proxy, endpoint = proxied_endpoint(port)
            proxies.append(proxy)
            remote.append(proxy)
            endpoints.append(endpoint)
        else:
            endpoints.append(f"127.0.0.1:{port}")
    host_arguments = split_bench.model_host_arguments(model, arguments.threads, endpoints, shares)
    host = split_bench.Child("direct model host", "meshdesk.adapters.llama.host",
                             [*host_arguments, "--speculative", arguments.speculative], root / "direct-host.log")
    children.append(host)
    port = host.wait_ready(arguments.ready_timeout)["port"]

    def complete(prompt: str, max_tokens: int, repetition: int) -> split_bench.Run:
        return split_bench.run_model_host(DIRECT, port, prompt, max_tokens, repetition)

    return Split(DIRECT, remote, complete)


def rpc_worker_port(root: Path, index: int, arguments, children: list) -> int:
    """A started rpc worker's port. Rarely, under load, one never announces (tests/split_tools.py
    `rpc_worker` meets it too): it is stopped and another started."""
    for attempt in range(WORKER_ATTEMPTS):
        worker = split_bench.Child(f"rpc worker {index + 1}", "meshdesk.adapters.llama.rpc_worker",
                                   ["--threads", str(arguments.threads)], root / f"rpc-worker-{index + 1}.log")
        children.append(worker)
        try:
            return worker.wait_ready(min(WORKER_READY_SECONDS, arguments.ready_timeout))["port"]
        except RuntimeError:
            if attempt == WORKER_ATTEMPTS - 1:
                raise
            print(f"rpc worker {index + 1} did not start; starting another", flush=True)
            worker.stop()
    raise AssertionError("unreachable")


# --- measuring ----------------------------------------------------------------------------------------


def sample(split: Split, delay_ms: float, prompt: str, max_tokens: int, repetition: int) -> Sample:
    """One run, taken again when the split was planned again meanwhile: members with equal RTTs
    on loopback swap places in the device order as their measured RTTs jitter, and each swap
    restarts the model host (the node resumes the answer, but the run measured a reload)."""
    for _ in range(ATTEMPTS):
        split.settle()
        layout = split.layout()
        try:
            taken = sample_once(split, delay_ms, prompt, max_tokens, repetition)
        except Exception as error:  # 503 "loading": the host restarted under this request
            if getattr(error, "status_code", None) != 503 and split.layout() == layout:
                raise
        else:
            if split.layout() == layout:
                return taken
        split.replans += 1
    raise RuntimeError(f"{split.side}: the split was planned again during {ATTEMPTS} tries of one run")


def sample_once(split: Split, delay_ms: float, prompt: str, max_tokens: int, repetition: int) -> Sample:
    before = [proxy.counters() for proxy in split.proxies]
    status_before = split.round_trips() if split.round_trips else None
    run = split.complete(prompt, max_tokens, repetition)
    after = [proxy.counters() for proxy in split.proxies]
    status_after = split.round_trips() if split.round_trips else None
    return Sample(split.side, delay_ms, run, [b["round_trips"] - a["round_trips"] for a, b in zip(before, after)],
                  [(b["bytes_to_target"] - a["bytes_to_target"], b["bytes_from_target"] - a["bytes_from_target"])
                   for a, b in zip(before, after)],
                  None if status_before is None else status_after - status_before)


def measure(arguments, splits: list[Split]) -> list[Sample]:
    for split in splits:  # warm-up, not counted: a first generation pays one-off costs
        sample(split, 0.0, PROMPTS[0], 8, -1)
    samples: list[Sample] = []
    turn = 0
    for delay_ms in arguments.delays:
        for split in splits:
            for proxy in split.proxies:
                proxy.set_delay(delay_ms / 1000)
        for repetition in range(arguments.repetitions):
            for prompt in PROMPTS:
                order = splits[turn % 2:] + splits[:turn % 2]  # each side goes first equally often
                turn += 1
                for split in order:
                    taken = sample(split, delay_ms, prompt, arguments.max_tokens, repetition)
                    samples.append(taken)
                    print(f"  {delay_ms:5.1f} ms  {split.side:<8}  {prompt[:32]:<32}  {taken.tokens:>4} tok  "
                          f"{taken.run.tokens_per_second:7.1f} tok/s  "
                          f"round trips {'+'.join(map(str, taken.member_round_trips))}", flush=True)
    return samples


# --- reporting ----------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One side at one delay, over its runs."""

    tokens_per_second: float
    round_trips_per_token: list[float]  # per remote member
    status_per_token: float | None
    bytes_per_token: list[tuple[float, float]]  # per remote member: (to it, from it)

    @property
    def milliseconds_per_token(self) -> float:
        return 1000 / self.tokens_per_second if self.tokens_per_second else math.nan


def figures(samples: list[Sample]) -> Figures:
    tokens = sum(s.tokens for s in samples) or 1
    members = len(samples[0].member_round_trips)
    per_member = [sum(s.member_round_trips[m] for s in samples) / tokens for m in range(members)]
    counted = [s.status_round_trips for s in samples if s.status_round_trips is not None]
    status = sum(counted) / tokens if counted else None
    traffic = [(sum(s.member_bytes[m][0] for s in samples) / tokens, sum(s.member_bytes[m][1] for s in samples) / tokens)
               for m in range(members)]
    return Figures(split_bench.median(s.run.tokens_per_second for s in samples), per_member, status, traffic)


def report(arguments, samples: list[Sample], load_before) -> None:
    table = {(side, delay): figures([s for s in samples if s.side == side and s.delay_ms == delay])
             for side in SIDES for delay in arguments.delays}
    remote = arguments.members - 1
    print()
    print(f"per delay and side (median tok/s; round trips per generated token, per remote member "
          f"{'/'.join(MEMBER_NAMES[:remote])}):")
    print(f"  {'one-way':>7}  {'side':<8} {'tok/s':>7} {'vs 0 ms':>7} {'ms/tok':>7}  {'round trips/tok':>15}  "
          f"{'meshdesk count/tok':>18}  {'bytes/tok to/from each member':>29}")
    for delay in arguments.delays:
        for side in SIDES:
            mine, base = table[(side, delay)], table[(side, 0.0)]
            ratio = mine.tokens_per_second / base.tokens_per_second if base.tokens_per_second else math.nan
            per_member = " ".join(f"{value:.2f}" for value in mine.round_trips_per_token)
            counted = "" if mine.status_per_token is None else f"{mine.status_per_token:.2f}"
            traffic = " ".join(f"{to / 1000:.1f}k/{back / 1000:.1f}k" for to, back in mine.bytes_per_token)
            print(f"  {delay:5.1f} ms  {side:<8} {mine.tokens_per_second:7.1f} {ratio:7.2f} "
                  f"{mine.milliseconds_per_token:7.1f}  {per_member:>15}  {counted:>18}  {traffic:>29}")
    print()
    last = max(arguments.delays)
    for side in SIDES:
        added = table[(side, last)].milliseconds_per_token - table[(side, 0.0)].milliseconds_per_token
        slope = added / last if last else math.nan
        print(f"  {side}: {added:+.1f} ms per token at {last:.0f} ms one-way = {slope:.2f} ms per ms of delay "
              f"(one delayed wait per token per remote member would be {remote})")
    load_after = os.getloadavg()
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores, "
          f"--threads {arguments.threads}, {arguments.members} members, speculation {arguments.speculative}")
    if arguments.quick or load_before[0] > 0.5:
        print("  WARNING: numbers may be noisy (" + ", ".join(
            (["quick run"] if arguments.quick else []) +
            ([f"load average {load_before[0]:.2f} before the run"] if load_before[0] > 0.5 else [])) + ")")
    print()
    for side in SIDES:
        print(f"{side}: tok/s at {last:.0f} ms one-way / at 0 ms = "
              f"{table[(side, last)].tokens_per_second / table[(side, 0.0)].tokens_per_second:.3f}")
    per_member = {side: split_bench.median(v for d in arguments.delays for v in table[(side, d)].round_trips_per_token)
                  for side in SIDES}
    print(f"round trips per token per remote member = meshdesk {per_member[MESHDESK]:.2f}, "
          f"direct {per_member[DIRECT]:.2f}")


# --- running ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, split_bench.stop_on_signal)
    load_before = os.getloadavg()
    model = arguments.model or split_bench.bundled_model()
    if not model.is_file():
        print(f"error: no model file at {model}", file=sys.stderr)
        return 1
    print(f"model {model}  members {arguments.members}  threads {arguments.threads}  delays "
          f"{','.join(f'{d:g}' for d in arguments.delays)} ms one-way host->member  max_tokens {arguments.max_tokens}  "
          f"repetitions {arguments.repetitions}  prompts {len(PROMPTS)}  temperature 0  "
          f"speculation {arguments.speculative}", flush=True)
    children, nodes, proxies = [], [], []
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-latency-") as folder:
        root = Path(folder)
        try:
            meshdesk, plan = start_meshdesk(root, model, arguments, nodes, proxies)
            shares = [member["share"] for member in plan["members"]]
            print(f"meshdesk split ready: shares {shares} (device order, A last)", flush=True)
            direct = start_direct(root, model, arguments, shares, children, proxies)
            print("direct split ready", flush=True)
            samples = measure(arguments, [meshdesk, direct])
            if meshdesk.replans:
                print(f"  meshdesk: {meshdesk.replans} run(s) taken again: A planned the split again meanwhile "
                      "(members swapping places in the device order as their RTTs jitter)")
            report(arguments, samples, load_before)
        except (Exception, split_bench.Stopped, KeyboardInterrupt):
            return split_bench.failed(nodes)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleaning up; do not stop half-way
            for node in nodes:  # A first: a member stopping first would make A re-plan and reload
                node.stop()
            for child in reversed(children):
                child.stop()
            for proxy in proxies:
                proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
