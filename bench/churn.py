"""Friends come and go: how fast the mesh gets over a lost machine and takes in a new one.

Three figures from one run, with real node processes on 127.0.0.1 and the bundled model:

1. **peer removal**: SIGKILL of a peer to its removal from every other node's view (no longer
   alive or suspect in `/api/status`), in a mesh of three lite nodes (`--client`). Goal <= 5 s.
2. **resumed answer**: SIGKILL of a split member mid-answer to the next token of the same
   streamed answer. A (`--model --split`) hosts, B joins with its own copy and less memory, the
   answer streams from A's API, and B is killed after a few tokens. Goal <= 10 s.
3. **joiner**: a node with nothing on disk joins (`--join TOKEN --split`); from its process
   start to the first token of an answer from a plan that includes it. Goal <= 15 s.

A figure whose feature has not landed prints "not measured: <why>" instead of a number, with what
happened instead (for 2: when the answer ended in an error, how long until a new request got its
first token).

    .venv/bin/python bench/churn.py            # 3 kills of a peer, then 2 and 3 once
    .venv/bin/python bench/churn.py --quick    # 1 kill of a peer (smoke test)

Exit code 0 whatever the verdicts (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import split as split_bench  # noqa: E402  (its node starting and split recipe)
from tests.nodes import NodeProcess  # noqa: E402

GOAL_REMOVAL, GOAL_RESUME, GOAL_JOINER = 5.0, 10.0, 15.0
IN_VIEW = ("alive", "suspect")  # still counted in the mesh
POLL_SECONDS = 0.05
MESH_FORM_SECONDS = 60.0
KILL_AFTER_TOKENS = 12
RESUME_GAP_SECONDS = 0.5   # tokens still in the pipes when B dies arrive within this; a resumed one after
PROMPT = "Once upon a time"


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: clean up and exit 1."""


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, metavar="PATH", help="GGUF (default: the bundled Gemma 3 270M)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per node (default 1)")
    parser.add_argument("--kills", type=int, default=3, help="peer kills for figure 1 (default 3)")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="seconds to wait for a resumed answer or a plan with the joiner (default 60)")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds for a split to form")
    parser.add_argument("--quick", action="store_true", help="one peer kill, shorter waits (smoke test)")
    parser.add_argument("--only", choices=("removal", "resume", "joiner"), action="append",
                        help="measure only these figures (repeatable)")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.kills, arguments.wait = 1, 30.0
    if arguments.kills < 1 or arguments.threads < 1:
        parser.error("--kills and --threads must be >= 1")
    return arguments


def in_view(observer: NodeProcess, node_id: str) -> bool:
    return any(peer["id"] == node_id and peer["state"] in IN_VIEW for peer in observer.status()["peers"])


def wait(condition, seconds: float, what: str, nodes=()):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds:.0f} s waiting for {what}")
        for node in nodes:
            if node.process.poll() is not None:
                raise RuntimeError(f"node {node.home.name} exited: {node.describe()}")
        time.sleep(POLL_SECONDS)
    return value


def sigkill(node: NodeProcess) -> float:
    """Kills the node and returns the moment (perf_counter) the signal was sent."""
    killed_at = time.perf_counter()
    node.process.send_signal(signal.SIGKILL)
    node.process.wait()
    return killed_at


# --- figure 1 --------------------------------------------------------------------------------------


def peer_removal(root: Path, arguments, nodes: list) -> list[float]:
    """Seconds from SIGKILL to out of every survivor's view, once per kill."""
    founder = split_bench.start_node(root / "founder", "--client")
    nodes.append(founder)
    token = founder.invite_token()
    survivor = split_bench.start_node(root / "survivor", "--client", "--join", token)
    nodes.append(survivor)
    observers = [founder, survivor]
    took = []
    for kill in range(arguments.kills):
        victim = split_bench.start_node(root / f"victim-{kill}", "--client", "--join", token)
        nodes.append(victim)
        victim_id = victim.node_id
        wait(lambda: all(in_view(o, victim_id) for o in observers) and in_view(victim, founder.node_id)
             and in_view(victim, survivor.node_id), MESH_FORM_SECONDS, "three linked nodes", [*observers, victim])
        time.sleep(1.5)  # a settled mesh: links pinged, heartbeats relayed (not a synchronisation)
        killed_at = sigkill(victim)
        out_at = {}
        while len(out_at) < len(observers):
            for observer in observers:
                if observer.home.name not in out_at and not in_view(observer, victim_id):
                    out_at[observer.home.name] = time.perf_counter() - killed_at
            if time.perf_counter() - killed_at > 60:
                raise RuntimeError(f"the killed peer is still in a view after 60 s: {out_at}")
            time.sleep(POLL_SECONDS)
        took.append(max(out_at.values()))
        print(f"  kill {kill + 1}: out of every view after {took[-1]:.2f} s "
              f"({', '.join(f'{name} {seconds:.2f} s' for name, seconds in sorted(out_at.items()))})", flush=True)
    return took


# --- figure 2 --------------------------------------------------------------------------------------


class Stream(threading.Thread):
    """One streamed completion from the API, every text piece timed."""

    def __init__(self, client, model_id: str, max_tokens: int):
        super().__init__(daemon=True)
        self.client, self.model_id, self.max_tokens = client, model_id, max_tokens
        self.times: list[float] = []
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.stop = threading.Event()  # set: the client hangs up, as a user who has seen enough

    def run(self) -> None:
        try:
            stream = self.client.completions.create(model=self.model_id, prompt=PROMPT, max_tokens=self.max_tokens,
                                                    temperature=0, seed=1234, stream=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    self.times.append(time.perf_counter())
                if chunk.choices and chunk.choices[0].finish_reason:
                    self.finish_reason = chunk.choices[0].finish_reason
                if self.stop.is_set():
                    stream.close()
                    return
        except Exception as error:  # the answer ended in an error: that is today's behaviour
            self.error = f"{type(error).__name__}: {str(error)[:160]}"


def first_token_of_a_new_request(client, model_id: str, since: float, seconds: float) -> float | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        probe = Stream(client, model_id, 4)
        probe.run()
        if probe.times:
            return probe.times[0] - since
        time.sleep(0.2)
    return None


def resumed_answer(root: Path, arguments, nodes: list, model: Path) -> tuple[float | None, str, NodeProcess]:
    """(seconds from killing member B to the next token of the same answer, or None; a note; node A)."""
    node_a, _, _ = split_bench.start_mesh(root, model, arguments, nodes)
    node_b = nodes[-1]
    client = node_a.client()
    model_id = client.models.list().data[0].id
    stream = Stream(client, model_id, max_tokens=2000)
    stream.start()
    wait(lambda: len(stream.times) >= KILL_AFTER_TOKENS or not stream.is_alive(), 120, "the answer to stream")
    if not stream.is_alive():
        raise RuntimeError(f"the answer ended before B was killed: {stream.error or stream.finish_reason}")
    killed_at = sigkill(node_b)

    def resumed_at() -> float | None:
        after = [t for t in list(stream.times) if t > killed_at]
        return next((b for a, b in zip([killed_at, *after], after) if b - a >= RESUME_GAP_SECONDS), None)
    deadline = time.monotonic() + arguments.wait
    while stream.is_alive() and resumed_at() is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    resumed = resumed_at()
    if resumed is not None:
        count = len(stream.times)
        wait(lambda: len(stream.times) >= count + KILL_AFTER_TOKENS or not stream.is_alive(), 60,
             "the resumed answer to go on")
        stream.stop.set()  # hang up: the answer would otherwise keep A busy during figure 3
        stream.join(10)
        return resumed - killed_at, (f"{len(stream.times)} tokens in all, then the client hung up; "
                                     f"error {stream.error}"), node_a
    if stream.is_alive():
        stream.stop.set()
        return None, f"no token in the {arguments.wait:.0f} s after B was killed", node_a
    new = first_token_of_a_new_request(client, model_id, killed_at, arguments.wait)
    today = f"a new request's first token came {new:.1f} s after the kill" if new is not None \
        else f"no new request was answered within {arguments.wait:.0f} s"
    return None, (f"the answer does not resume (it ended: {stream.error or stream.finish_reason}); "
                  f"{today}"), node_a


# --- figure 3 --------------------------------------------------------------------------------------


def model_pid(node: NodeProcess) -> int | None:
    models = node.status().get("models") or [{}]
    return models[0].get("pid")


def plan_with(node_a: NodeProcess, member_id: str, old_pid: int | None) -> bool:
    """A's plan includes the member, and the model host started for it (not the one before) is ready."""
    status = node_a.status()
    plans, models = status.get("plans") or [], status.get("models") or []
    return bool(plans and models and models[0].get("state") == "ready" and models[0].get("pid") != old_pid
                and any(member["id"] == member_id for member in plans[0].get("members") or []))


def joiner_first_token(root: Path, arguments, nodes: list, node_a: NodeProcess) -> tuple[float | None, str]:
    wait(lambda: node_a.model_state() == "ready", arguments.ready_timeout, "A to serve again after B's death",
         [node_a])  # the joiner's figure must not include the re-plan after figure 2
    old_pid = model_pid(node_a)
    started = time.perf_counter()
    joiner = split_bench.start_node(root / "joiner", "--join", node_a.invite_token(), "--split",
                                    "--threads", str(arguments.threads))
    nodes.append(joiner)
    joiner_id = joiner.node_id
    deadline = time.monotonic() + arguments.wait
    while not plan_with(node_a, joiner_id, old_pid):
        if time.monotonic() > deadline:
            role, status = joiner.status()["node"].get("role"), node_a.status()
            plan, models = (status.get("plans") or [{}])[0], status.get("models") or [{}]
            included = any(member["id"] == joiner_id for member in plan.get("members") or [])
            return None, (f"A's plan did not include the joiner with a ready model within {arguments.wait:.0f} s "
                          f"(the joiner, with nothing on disk, is {role}; A's plan {plan.get('state')}, "
                          f"{'with' if included else 'without'} it; A's model {models[0].get('state')})")
        time.sleep(POLL_SECONDS)
    client = node_a.client()
    first = first_token_of_a_new_request(client, client.models.list().data[0].id, started, arguments.wait)
    if first is None:
        return None, f"the plan included the joiner, but no answer came within {arguments.wait:.0f} s"
    return first, "from the joiner's process start"


# --- report ---------------------------------------------------------------------------------------


def verdict_line(name: str, seconds: float | None, goal: float, note: str) -> str:
    if seconds is None:
        return f"{name:<52} not measured: {note}  (goal <= {goal:.0f} s)"
    return (f"{name:<52} {seconds:6.2f} s  goal <= {goal:.0f} s  {'PASS' if seconds <= goal else 'FAIL'}"
            + (f"  ({note})" if note else ""))


def stop_on_signal(signum, frame) -> None:
    raise Stopped(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    wanted = set(arguments.only or ("removal", "resume", "joiner"))
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    load_before = os.getloadavg()
    nodes: list[NodeProcess] = []
    lines = []
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-churn-") as folder:
        root = Path(folder)
        try:
            if "removal" in wanted:
                print(f"1. SIGKILL of a peer ({arguments.kills} kills, three lite nodes)", flush=True)
                took = peer_removal(root / "removal", arguments, nodes)
                note = f"median of {len(took)}, max {max(took):.2f} s" if len(took) > 1 else ""
                lines.append(verdict_line("SIGKILL of a peer -> removal from every view",
                                          statistics.median(took), GOAL_REMOVAL, note))
                stop_all(nodes)
            if wanted & {"resume", "joiner"}:
                model = arguments.model or split_bench.bundled_model()
                print(f"2. SIGKILL of a split member mid-answer ({model.name})", flush=True)
                seconds, note, node_a = resumed_answer(root / "resume", arguments, nodes, model)
                if "resume" in wanted:
                    lines.append(verdict_line("SIGKILL of a member -> next token of the answer",
                                              seconds, GOAL_RESUME, note))
                if "joiner" in wanted:
                    print("3. a joiner with nothing on disk", flush=True)
                    seconds, note = joiner_first_token(root / "joiner", arguments, nodes, node_a)
                    lines.append(verdict_line("joiner with nothing on disk -> first token",
                                              seconds, GOAL_JOINER, note))
        except (Exception, Stopped, KeyboardInterrupt):
            return split_bench.failed(nodes)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleaning up; do not stop half-way
            stop_all(nodes)
    print()
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
          + ("  WARNING: numbers may be noisy (quick run)" if arguments.quick else ""))
    for line in lines:
        print(line)
    return 0


def stop_all(nodes: list[NodeProcess]) -> None:
    while nodes:
        nodes.pop(0).stop()


if __name__ == "__main__":
    raise SystemExit(main())
