"""A model host's speculation totals in the node (node/model_host.py SpeculationTotals): the mode
its child announced, and for a split model the tunnel's round trips during its generations."""

from __future__ import annotations

import asyncio

from meshdesk.node.model_host import ModelHost, SpeculationTotals, generated_here
from tests.fakes import ProcessStarter, ManualClock, eventually, run_on_loopback
from tests.test_node_model_host import GenerationPort, collect


def test_an_ngram_host_reports_its_mode_and_counts():
    totals = SpeculationTotals()
    totals.announced({"event": "ready", "port": 1, "speculation": "ngram", "ngram_max": 8})
    assert totals.summary()["acceptance_rate"] is None and totals.summary()["mode"] == "ngram"
    totals.add({"proposed": 40, "accepted": 30, "steps": 20, "generated": 50, "backed_off": 6, "mode": "ngram"})
    assert totals.summary() == {
        "proposed": 40, "accepted": 30, "steps": 20, "generated": 50, "backed_off": 6, "mode": "ngram",
        "ngram_max": 8, "acceptance_rate": 0.75, "tokens_per_step": 2.5, "tokens_per_round_trip": None}


def test_a_host_that_does_not_speculate_has_no_counts():
    totals = SpeculationTotals()
    totals.announced({"event": "ready", "port": 1, "speculation": "off"})
    assert totals.summary() is None
    totals.announced({"event": "ready", "port": 1, "speculation": "off", "draft_error": "no room"})
    assert totals.summary() == {"error": "no room"}
    # A child from before the modes were announced: its draft says it speculates.
    totals.announced({"event": "ready", "port": 1, "draft": "d.gguf", "draft_max": 4})
    assert totals.summary()["mode"] == "draft" and totals.summary()["draft_max"] == 4


def test_a_split_host_counts_tokens_per_round_trip_around_each_generation(tmp_path):
    tunnel = {"round_trips": 100}  # stands in for rpc_tunnel.Traffic, which counts all along

    async def scenario(loopback):
        port = GenerationPort(loopback)
        host = ModelHost("tiny", tmp_path / "tiny.gguf", ["model-host"], tmp_path / "host.log",
                         start_process=ProcessStarter(), sleep=ManualClock().sleep,
                         round_trips=lambda: tunnel["round_trips"])
        task = asyncio.ensure_future(host.run())
        process = await host.start_process.next_process()
        process.announce({"event": "ready", "port": await port.start(), "speculation": "ngram", "ngram_max": 8})
        await eventually(lambda: host.status().state == "ready")
        tunnel["round_trips"] += 7  # between generations: not counted
        for tokens, round_trips in ((30, 10), (20, 15)):
            generation = asyncio.ensure_future(collect(host, "x"))
            answer = await port.next()
            tunnel["round_trips"] += round_trips
            # each answer carries on 100 tokens of a lost host's: `usage` counts them, this host
            # generated only the prompt pass's token and its passes' (`generated`)
            await answer.finish("t", usage={"prompt_tokens": 3, "completion_tokens": 100 + tokens},
                                speculative={"proposed": 1, "accepted": 1, "steps": 1, "generated": tokens - 1})
            await asyncio.wait_for(generation, 2)
        assert host.status().speculative["tokens_per_round_trip"] == 2.0  # 50 tokens, 25 round trips
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_on_loopback(scenario)


def test_a_finish_event_with_malformed_counts_adds_no_round_trip_tokens():
    assert generated_here({"usage": 5, "speculative": [1]}) is None
    assert generated_here({"speculative": {"generated": "9"}}) is None
    assert generated_here({"speculative": {"generated": True}}) is None
    assert generated_here({"speculative": {"generated": 9}}) == 10
