"""A batch crosses a split's remote member once per step (issue 16, item 3): on a real two-node
split, 4 concurrent streams cost far fewer round trips per generated token than one stream alone.

A one-at-a-time model host pays a round trip per token whatever the number of streams (~1.0);
a batching one shares each step's round trip between the streams in the batch (~1/4, and ~0.3-0.4
measured with the prompts' passes). One whose cache is split per sequence pays ~0.5-0.9: llama.cpp
cuts each step over such a cache into a micro-batch per sequence, each its own trip.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.latency_tools import proxied_members, routes_environment
from tests.nodes import poll
from tests.test_split import seeded_home, split_plan

pytestmark = pytest.mark.slow

DELAY = 0.005  # one-way, host to member: keeps each step's requests and its reply apart, as in test_latency_routes
STREAMS, TOKENS = 4, 32  # long enough that the streams' staggered starts count little
PROMPTS = ("Once upon a time, in a village by the sea,", "The history of the Roman Empire begins",
           "Here is a recipe for chocolate chip cookies:", "Dear friend, I am writing to tell you about")


def parallel_option(sequences: int) -> list[str]:
    """`--parallel N` where the node has it; without it the test still runs, and shows what a
    one-at-a-time host costs."""
    from meshdesk.app.cli import build_parser

    has_option = any("--parallel" in action.option_strings for action in build_parser()._actions)
    return ["--parallel", str(sequences)] if has_option else []


def streamed_tokens(client, model_id: str, prompt: str) -> int:
    """Text chunks of one greedy streaming completion (the host sends one per token)."""
    stream = client.completions.create(model=model_id, prompt=prompt, max_tokens=TOKENS, temperature=0, stream=True)
    return sum(1 for chunk in stream if chunk.choices and chunk.choices[0].text)


def round_trips_per_token(host, proxy, streams: int) -> float:
    """The member link's round trips during `streams` concurrent completions, over their tokens."""
    client = host.client()
    model_id = client.models.list().data[0].id
    before = proxy.counters()["round_trips"]
    with ThreadPoolExecutor(streams) as pool:
        tokens = list(pool.map(lambda prompt: streamed_tokens(client, model_id, prompt), PROMPTS[:streams]))
    after = proxy.counters()["round_trips"]
    assert all(count >= TOKENS // 2 for count in tokens), tokens  # every stream really generated
    return (after - before) / sum(tokens)


def test_concurrent_streams_share_each_steps_round_trip_to_the_member(node_factory, tmp_path, smollm2_model_path):
    (member,) = proxied_members(1)
    proxy = member.proxy
    try:
        proxy.set_delay(DELAY)
        common = ["--split", "--threads", "1", "--speculative", "off"]
        host = node_factory("--model", str(smollm2_model_path), *common, *parallel_option(STREAMS),
                            environment=routes_environment([member]))
        worker = node_factory("--join", host.invite_token(), "--max-vram", "10", "--bind-port", str(member.mesh_port),
                              *common, home=seeded_home(tmp_path, "worker", smollm2_model_path))
        poll(lambda: split_plan(host) is not None and host.model_state() == "ready", 120,
             message=f"the split to be running: {host.describe()} WORKER {worker.describe()}")
        assert proxy.counters()["connections"] >= 1  # the split host's rpc link crosses the proxy

        round_trips_per_token(host, proxy, 1)  # warm-up: a host's first answer pays one-off round trips
        alone = round_trips_per_token(host, proxy, 1)
        together = round_trips_per_token(host, proxy, STREAMS)
    finally:
        proxy.stop()
    assert 0.8 <= alone <= 1.3, alone  # one step, one round trip, per token (the prompt's pass on top)
    assert together < 0.5, (alone, together)  # one step's round trip for up to STREAMS tokens
