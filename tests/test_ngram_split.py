"""Speculation in a split: the main model's layers on a direct rpc worker behind a counting
proxy (tests/delay_proxy.py, no delay), so the test sees every round trip to the member.

- prompt lookup verifies several tokens per pass, so an answer that repeats its prompt takes
  fewer round trips than tokens: what it is for on a slow link;
- greedy tokens on rpc devices are the plain model's up to a near tie (tests/ngram_split_check.py,
  a child, since rpc devices stay registered in the process that adds them);
- a draft model runs on the host only (host.load_draft: no GPU layers, no op offload): its
  weights never cross the link, and its passes (draft_max per step) add no round trips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.latency_tools import proxied_endpoint
from tests.split_tools import Child, rpc_worker
from tests.test_ngram_speculation import RENAME
from tests.test_speculative import HOST_MODULE, completion

pytestmark = pytest.mark.slow

MAX_TOKENS = 48


@pytest.fixture
def proxied_worker():
    worker, port = rpc_worker()
    proxy, endpoint = proxied_endpoint(port)
    try:
        yield proxy, endpoint
    finally:
        proxy.stop()
        worker.stop()


def split_host(model, endpoint: str, *arguments: str) -> Child:
    return Child(HOST_MODULE, "--model", str(model), "--threads", "1", "--rpc", endpoint,
                 "--tensor-split", "1", *arguments)


def generation_round_trips(proxy, port: int, prompt: str) -> tuple[int, dict]:
    """Round trips of a generation after the same one warmed up: the first pass of each new batch
    shape has llama.cpp allocate its compute buffers on the member (a few round trips, once)."""
    completion(port, prompt, MAX_TOKENS)
    before = proxy.counters()["round_trips"]
    _, finish = completion(port, prompt, MAX_TOKENS)
    return proxy.counters()["round_trips"] - before, finish


def test_prompt_lookup_takes_fewer_round_trips_than_tokens(proxied_worker, default_model_path):
    proxy, endpoint = proxied_worker
    host = split_host(default_model_path, endpoint, "--speculative", "ngram")
    try:
        round_trips, finish = generation_round_trips(proxy, host.port(120), RENAME)
    finally:
        host.stop()
    tokens, stats = finish["usage"]["completion_tokens"], finish["speculative"]
    # One round trip per main pass (the prompt's batch, then each verification step).
    assert round_trips <= stats["steps"] + 2, (round_trips, stats)
    assert tokens / round_trips > 1.5, (tokens, round_trips, stats)


def test_a_draft_model_stays_on_the_host_in_a_split(proxied_worker, default_model_path):
    proxy, endpoint = proxied_worker
    host = split_host(default_model_path, endpoint, "--speculative", "draft",
                      "--draft", str(default_model_path), "--draft-max", "8")
    try:
        port = host.port(120)
        assert host.ready["speculation"] == "draft"
        loaded = proxy.counters()["bytes_to_target"]  # the weights, before any generation
        round_trips, finish = generation_round_trips(proxy, port, RENAME)
    finally:
        host.stop()
    # The main model's weights crossed the link once; the draft's (the same file again) did not.
    model_bytes = os.path.getsize(default_model_path)
    assert 0.5 * model_bytes < loaded < 1.5 * model_bytes, (loaded, model_bytes)
    stats = finish["speculative"]
    # Each step the draft ran up to 8 passes of its own; the link saw only the main model's.
    assert stats["steps"] >= 3 and round_trips <= stats["steps"] + 2, (round_trips, stats)


@pytest.mark.parametrize("model, workers", [("default_model_path", 1), ("smollm2_model_path", 2)])
def test_greedy_tokens_on_rpc_devices_are_the_plain_models_up_to_a_near_tie(request, model, workers):
    """A rejected proposal's KV cache entries must go from the rpc devices too, and the logits
    of each verified position must be read from its own row: a fork at a clear margin says not."""
    started = [rpc_worker() for _ in range(workers)]
    try:
        result = subprocess.run([sys.executable, "-m", "tests.ngram_split_check", str(request.getfixturevalue(model)),
                                 *(f"127.0.0.1:{port}" for _, port in started)],
                                capture_output=True, text=True, timeout=600)
    finally:
        for worker, _ in started:
            worker.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    print(result.stdout)  # the margins, for a reader of -s
    assert len(runs) == 4, result.stdout
    for run in runs:
        assert run["compared"] >= run["of"] // 4, run
    repeating = runs[:2]
    assert all(run["accepted"] > 0 and run["generated"] / run["steps"] > 1.5 for run in repeating), repeating
