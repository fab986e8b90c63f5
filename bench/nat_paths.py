"""Paths across NAT, side by side in one run: a split over a direct link, a punched one and one
through a relay.

In the NAT lab (tests/nat_lab.py; root and nftables): a lite founder on the internet, and a
split of the bundled Gemma 3 270M between a host and one member, each pair on its own lab:

  - direct: host and member both on the internet. The lower id dials the other's address; the
    rpc tunnel is the TLS data plane (TCP).
  - punched: host and member each at home behind an endpoint-independent router. No dial
    reaches either; the founder introduces them and both punch (core/hole_punch.py); the rpc
    tunnel is a data stream of the punched QUIC link (adapters/quic/streams.py).
  - relayed: host and member each at home behind a symmetric router, where no punch gets
    through, and a `meshdesk relay` on the internet that the founder names (`--relay`); both
    learn it from the founder's record, register there and link through it; the rpc tunnel is a
    data stream of the relayed QUIC link.

For each: seconds from the member's start to its link with the host (`linked` in the host's
/api/status), to the split's first answer, the control link's round trip (the host's ping
RTT), the split's tokens per second (one stream, greedy, after a warm-up), and the host's rpc
round trips per token. In a full run the member has no copy of the model, so the host sends it
the layers it lacks over the path's data plane first: the MiB/s at which they arrive (the
member's `layers.received_bytes`, from the first byte to the last) is the path's throughput. Throughput and round trips of the planes themselves, without a model,
are bench/transport.py's ("QUIC data" and "QUIC via relay" against "TLS").

    .venv/bin/python bench/nat_paths.py          # 3 completions of 48 tokens per path
    .venv/bin/python bench/nat_paths.py --quick  # 1 completion of 8 (a smoke test)

Exit 0 with the figures; 0 and a line saying why when no NAT lab can be built here; 1 on errors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.nat_lab import Nat, RelayProcess, lab_not_permitted, nat_lab, seeded_home  # noqa: E402
from tests.netns import start_in  # noqa: E402
from tests.nodes import poll  # noqa: E402

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "The history of the Roman Empire"
PATHS = ("direct", "punched", "relayed")
READY_TIMEOUT = 240.0


@dataclass
class PathFigures:
    link_seconds: float = float("nan")
    first_answer_seconds: float = float("nan")
    rates: list[float] = field(default_factory=list)
    round_trips_per_token: float = float("nan")
    rtt_ms: float = float("nan")
    layers_mib_per_second: float = float("nan")  # full runs: the member's layers over the path


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=3, help="timed completions per path (default 3)")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per completion (default 48)")
    parser.add_argument("--quick", action="store_true", help="one completion of 8 tokens (a smoke test)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.repetitions, arguments.max_tokens = 1, 8
    if arguments.repetitions < 1 or arguments.max_tokens < 2:
        parser.error("--repetitions must be >= 1 and --max-tokens >= 2")
    return arguments


def bundled_model() -> Path:
    from meshdesk.adapters.bundled_model import install_bundled_model

    return install_bundled_model(Path.home() / ".cache" / "meshdesk" / "bench")


def linked(node, peer_id: str) -> bool:
    return any(peer["id"] == peer_id and peer["linked"] and peer["state"] == "alive"
               for peer in node.status()["peers"])


def split_ready(host, member_id: str) -> bool:
    status = host.status()
    plans, models = status["plans"], status["models"]
    return bool(plans and plans[0]["state"] == "split" and member_id in {m["id"] for m in plans[0]["members"]}
                and models and models[0]["state"] == "ready")


def timed_completion(host, max_tokens: int) -> tuple[int, float]:
    """Tokens and seconds of one completion (run inside the host's namespace)."""
    started_at = time.perf_counter()
    answer = host.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=max_tokens,
                                              temperature=0, seed=1)
    return answer.usage.completion_tokens, time.perf_counter() - started_at


def machines_for(lab, path: str):
    if path == "direct":
        return lab.public(), lab.public()
    nat = Nat.ENDPOINT_INDEPENDENT if path == "punched" else Nat.SYMMETRIC
    return lab.home(nat).machines[0], lab.home(nat).machines[0]


def link_rtt_ms(host, member_id: str) -> float:
    rtt = next((peer["rtt_ms"] for peer in host.status()["peers"] if peer["id"] == member_id), None)
    return float("nan") if rtt is None else rtt


class LayerArrivals:
    """The member's received layer bytes over time, polled: from the first byte to the last."""

    def __init__(self, member):
        self.member = member
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None

    def watch(self) -> bool:
        received = self.member.status()["layers"]["received_bytes"]
        now = time.monotonic()
        if received and self.first is None:
            self.first = (now, received)
        if received and (self.last is None or received > self.last[1]):
            self.last = (now, received)
        return True

    def mib_per_second(self) -> float:
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return float("nan")
        return (self.last[1] - self.first[1]) / (1 << 20) / (self.last[0] - self.first[0])


def measure_path(path: str, model: Path, arguments) -> PathFigures:
    figures = PathFigures()
    with nat_lab() as lab, tempfile.TemporaryDirectory(prefix=f"meshdesk-bench-nat-{path}-") as folder:
        root, started, relay = Path(folder), [], None
        try:
            relay = RelayProcess(lab.public()) if path == "relayed" else None
            naming = ("--relay", relay.spec) if relay is not None else ()
            founder = start_in(lab.public(), seeded_home(root, "founder", None), "--client", *naming)
            started.append(founder)
            host_machine, member_machine = machines_for(lab, path)
            common = ("--join", founder.invite_token(), "--split", "--threads", "1", "--no-draft")
            host = start_in(host_machine, seeded_home(root, "host", model), *common, "--model", str(model),
                            "--max-vram", "2")
            started.append(host)
            begun = time.monotonic()
            member_copy = model if arguments.quick else None  # a full run sends it the layers it lacks
            member = start_in(member_machine, seeded_home(root, "member", member_copy), *common, "--max-vram", "1")
            started.append(member)
            member_id = member.node_id
            poll(lambda: linked(host, member_id), READY_TIMEOUT, interval=0.05,
                 message=lambda: f"the {path} link: {host.describe()}")
            figures.link_seconds = time.monotonic() - begun
            arrivals = LayerArrivals(member)
            poll(lambda: arrivals.watch() and split_ready(host, member_id), READY_TIMEOUT, interval=0.1,
                 message=lambda: f"the {path} split: {host.describe()}")
            figures.layers_mib_per_second = arrivals.mib_per_second()
            host.complete(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, seed=1)  # warm-up
            figures.first_answer_seconds = time.monotonic() - begun
            trips_before, tokens = host.status()["traffic"]["round_trips"], 0
            for _ in range(arguments.repetitions):
                made = host.machine.call(lambda: timed_completion(host, arguments.max_tokens))
                figures.rates.append(made[0] / made[1])
                tokens += made[0]
            figures.round_trips_per_token = (host.status()["traffic"]["round_trips"] - trips_before) / max(1, tokens)
            figures.rtt_ms = link_rtt_ms(host, member_id)
        finally:
            for node in reversed(started):
                node.stop()
            if relay is not None:
                relay.stop()
    return figures


def report(results: dict[str, PathFigures], arguments) -> None:
    print()
    print(f"{'path':<9} {'link s':>7} {'first answer s':>15} {'rtt ms':>7} {'layers MiB/s':>13} "
          f"{'tok/s median':>13} {'runs':>5} {'rpc trips/token':>16}")
    for path in PATHS:
        figures = results[path]
        median = statistics.median(figures.rates) if figures.rates else float("nan")
        print(f"{path:<9} {figures.link_seconds:7.2f} {figures.first_answer_seconds:15.1f} {figures.rtt_ms:7.2f} "
              f"{figures.layers_mib_per_second:13.1f} {median:13.2f} {len(figures.rates):5d} "
              f"{figures.round_trips_per_token:16.2f}")
    direct, punched, relayed = (statistics.median(results[path].rates) for path in PATHS)
    print()
    if arguments.quick:
        print("  WARNING: quick run; numbers are rough (and the member has the model: no layers sent)")
    links = ", ".join(f"{results[path].link_seconds:.1f} s {path}" for path in PATHS)
    print(f"punched / direct split tok/s = {punched / direct:.2f}  (link: {links})")
    print(f"relayed / direct split tok/s = {relayed / direct:.2f}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    reason = lab_not_permitted()
    if reason:
        print(f"no NAT lab here: {reason}")
        print("punched / direct split tok/s = (not measured)")
        print("relayed / direct split tok/s = (not measured)")
        return 0
    print(f"NAT paths bench: {arguments.repetitions} completion(s) of {arguments.max_tokens} tokens per path",
          flush=True)
    started = time.perf_counter()
    try:
        model = bundled_model()
        results = {path: measure_path(path, model, arguments) for path in PATHS}
        report(results, arguments)
    except Exception:
        traceback.print_exc()
        return 1
    print(f"(took {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
