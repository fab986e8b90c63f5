"""`meshdesk --speculative`: a real node runs prompt lookup in its model host and shows it in
/api/status; options that contradict each other are one line and exit 2."""

from __future__ import annotations

import pytest

from tests.nodes import poll, run_meshdesk
from tests.test_cli import assert_one_line_error
from tests.test_ngram_speculation import RENAME
from tests.test_speculative import model_status
from tests.test_split import MODEL, start_split

pytestmark = pytest.mark.slow


def test_a_node_with_ngram_speculation_shows_acceptance_in_its_status(node_factory, default_model_path):
    node = node_factory("--model", str(default_model_path), "--speculative", "ngram", "--threads", "1")
    node.wait_until_ready(90)
    status = model_status(node)
    assert status["draft"] is None
    assert status["speculative"]["mode"] == "ngram" and status["speculative"]["acceptance_rate"] is None
    node.client().completions.create(model=status["id"], prompt=RENAME, max_tokens=48, temperature=0, seed=1)
    speculative = poll(lambda: model_status(node)["speculative"]["steps"] and model_status(node)["speculative"],
                       10, message="acceptance counts after a request")
    assert speculative["acceptance_rate"] > 0.5 and speculative["tokens_per_step"] > 2, speculative
    assert speculative["ngram_max"] == 8 and speculative["tokens_per_round_trip"] is None  # not split


def test_a_split_host_shows_tokens_per_round_trip(node_factory, tmp_path, default_model_path):
    host, _ = start_split(node_factory, tmp_path, default_model_path)  # auto: prompt lookup
    assert model_status(host)["speculative"]["tokens_per_round_trip"] is None  # nothing generated yet
    for _ in range(2):  # the second without the first passes' buffer allocations on the member
        host.client().completions.create(model=MODEL, prompt=RENAME, max_tokens=48, temperature=0, seed=1)
    speculative = model_status(host)["speculative"]
    assert speculative["mode"] == "ngram" and speculative["acceptance_rate"] > 0.5, speculative
    # One round trip per pass to the one remote member: several tokens per round trip.
    assert speculative["tokens_per_round_trip"] > 1.5, speculative
    assert host.status()["traffic"]["round_trips"] > 0


def test_a_node_with_speculation_off_has_no_counts(node_factory, default_model_path):
    node = node_factory("--model", str(default_model_path), "--speculative", "off", "--threads", "1")
    node.wait_until_ready(90)
    model_id = model_status(node)["id"]
    assert node.client().completions.create(model=model_id, prompt=RENAME, max_tokens=8, temperature=0).choices
    assert model_status(node)["speculative"] is None and model_status(node)["draft"] is None


@pytest.mark.parametrize("arguments, expected", [
    (["--speculative", "draft", "--no-draft"], "--speculative draft needs a draft"),
    (["--speculative", "ngram", "--draft", "DRAFT"], "--draft is not used with --speculative ngram"),
    (["--speculative", "off", "--draft", "DRAFT"], "--draft is not used with --speculative off"),
    (["--speculative", "sometimes"], "sometimes"),
])
def test_contradicting_speculation_options_are_one_line_and_exit_2(tmp_path, default_model_path,
                                                                   arguments, expected):
    arguments = [str(default_model_path) if argument == "DRAFT" else argument for argument in arguments]
    line = assert_one_line_error(run_meshdesk("--home", str(tmp_path / "home"), "--port", "0",
                                              "--headless", *arguments))
    assert expected in line, line
