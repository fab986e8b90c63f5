"""Prompt-lookup (n-gram) speculation in the model host (adapters/llama/prompt_lookup_draft.py).

Greedy output must be the main model's own. As tests/test_speculative.py explains, this build's
kernels are not batch-invariant, so in process the answer is compared token by token with the
plain model and may fork only at a near tie; the host children are compared on prompts whose
text comes out identical on this build. Prompts that repeat their input (a rename, a list to
copy) are where proposals are accepted; prose is where the back-off must keep them out of the way.
"""

from __future__ import annotations

import json

import pytest

from meshdesk.core.openai_api import parse_chat_request, parse_completion_request
from tests.split_tools import Child
from tests.test_speculative import HOST_MODULE, compared_until_a_near_tie, greedy, host_request

pytestmark = pytest.mark.slow

FUNCTION = '''def total_price(items, tax_rate):
    subtotal = 0
    for item in items:
        subtotal = subtotal + item.price * item.quantity
    tax = subtotal * tax_rate
    return subtotal + tax
'''
RENAME = ("Rename the variable subtotal to net_total in this function.\n\n```python\n"
          f"{FUNCTION}```\n\nThe function with net_total:\n```python\n")
COPY = ("Copy this list exactly.\nList: apples, pears, plums, cherries, grapes, lemons, figs, dates.\n"
        "Copy: apples,")
REPEATING = (RENAME, COPY)
PROSE = ("The history of the lighthouse begins", "My favourite recipe for pancakes is")
MAX_TOKENS = 64


# --- in process: every token the main model's own, up to a near tie --------------------------


def llama_pair(model_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    from meshdesk.adapters.llama.prompt_lookup_draft import PromptLookupDraft
    from meshdesk.adapters.llama.speculative import SpeculativeLlama

    options = dict(n_ctx=1024, n_threads=1, n_threads_batch=1, n_gpu_layers=0, verbose=False)
    plain = llama_cpp.Llama(model_path=str(model_path), **options)
    main = SpeculativeLlama(model_path=str(model_path), **options)
    main.attach_draft(PromptLookupDraft(8, context=1024))
    return plain, main


@pytest.fixture(scope="module", params=["gemma", "smollm2"])
def pair(request):
    name = "default_model_path" if request.param == "gemma" else "smollm2_model_path"
    return llama_pair(request.getfixturevalue(name))


def speculated(main, prompt: str, count: int):
    main.speculation.begin()
    tokens = greedy(main, prompt, count)
    return tokens, main.speculation.finish()


@pytest.mark.parametrize("prompt", [*REPEATING, *PROSE])
def test_greedy_tokens_are_the_plain_models_up_to_a_near_tie(pair, prompt):
    plain, main = pair
    logits: list = []
    expected = greedy(plain, prompt, MAX_TOKENS, logits)
    actual, stats = speculated(main, prompt, len(expected))
    compared = compared_until_a_near_tie(expected, logits, actual)
    assert compared >= len(expected) // 4, (compared, stats)
    assert stats.accepted <= stats.proposed
    assert stats.generated == len(actual) - 1  # every token after the prompt's came from a pass


@pytest.mark.parametrize("prompt", REPEATING)
def test_an_answer_that_repeats_its_prompt_takes_several_tokens_a_pass(pair, prompt):
    _, main = pair
    _, stats = speculated(main, prompt, MAX_TOKENS)
    assert stats.accepted > 0
    assert stats.generated / stats.steps > 1.5, stats


def test_rejected_proposals_back_off(pair):
    """A proposer whose lookups are always wrong: after a window of rejections the passes go
    on without proposals, and their tokens count as backed off."""
    plain, main = pair
    lookup = main.speculation
    original = lookup.lookup.propose
    lookup.lookup.propose = lambda sequence, count: [t + 1 for t in original(sequence, count)] or [7] * count
    try:
        tokens, stats = speculated(main, PROSE[0], MAX_TOKENS)
    finally:
        del lookup.lookup.propose
    assert stats.accepted == 0 and 0 < stats.proposed
    assert stats.backed_off > MAX_TOKENS // 2, stats
    assert stats.steps - stats.backed_off < 12, stats  # passes that carried proposals
    logits: list = []
    expected = greedy(plain, PROSE[0], MAX_TOKENS, logits)
    compared_until_a_near_tie(expected, logits, tokens)


# --- the model host child ----------------------------------------------------------------------


def off_and_ngram_hosts(model_path):
    """A model host child of `model_path` per mode, "off" and "ngram", stopped afterwards."""
    hosts = {mode: Child(HOST_MODULE, "--model", str(model_path), "--threads", "1",
                         "--speculative", mode) for mode in ("off", "ngram")}
    try:
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()


@pytest.fixture(scope="module")
def gemma_hosts(default_model_path):
    yield from off_and_ngram_hosts(default_model_path)


def completion(port: int, prompt: str, max_tokens: int = MAX_TOKENS, **extra) -> tuple[str, dict]:
    return host_request(port, parse_completion_request(
        {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "seed": 1, **extra}))


def test_the_ready_line_says_what_speculates(gemma_hosts):
    gemma_hosts["off"].port()
    gemma_hosts["ngram"].port()
    assert gemma_hosts["off"].ready["speculation"] == "off"
    assert gemma_hosts["ngram"].ready["speculation"] == "ngram"
    assert gemma_hosts["ngram"].ready["ngram_max"] == 8
    assert "draft" not in gemma_hosts["ngram"].ready


@pytest.mark.parametrize("prompt", [RENAME, PROSE[1]])
def test_host_answers_are_identical_with_and_without_ngram(gemma_hosts, prompt):
    expected, plain_finish = completion(gemma_hosts["off"].port(), prompt)
    text, finish = completion(gemma_hosts["ngram"].port(), prompt)
    assert text == expected and finish["usage"] == plain_finish["usage"]
    assert "speculative" not in plain_finish
    stats = finish["speculative"]
    assert stats["mode"] == "ngram" and 0 <= stats["backed_off"] <= stats["generated"]
    assert stats["generated"] == finish["usage"]["completion_tokens"] - 1


def test_a_repeating_answer_is_mostly_accepted_in_the_host(gemma_hosts):
    _, finish = completion(gemma_hosts["ngram"].port(), RENAME)
    stats = finish["speculative"]
    assert stats["accepted"] / stats["proposed"] > 0.5 and stats["generated"] / stats["steps"] > 2, stats


def test_a_seeded_request_gives_the_same_answer_and_counts_every_time(gemma_hosts):
    port = gemma_hosts["ngram"].port()
    first = completion(port, COPY)
    completion(port, PROSE[0])  # another request in between leaves nothing behind
    assert completion(port, COPY) == first


def test_bad_ngram_max_fails_to_start(default_model_path):
    host = Child(HOST_MODULE, "--model", str(default_model_path), "--ngram-max", "0")
    try:
        with pytest.raises(AssertionError):
            host.port()
        assert host.ready == {"event": "failed", "message": "--ngram-max must be at least 1"}
    finally:
        host.stop()


# --- grammars: a tool call and a JSON schema, with prompt lookup on ---------------------------


@pytest.fixture(scope="module")
def smol_hosts(smollm2_model_path):
    yield from off_and_ngram_hosts(smollm2_model_path)


PLACE = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
         "properties": {"city": {"type": "string"}, "country": {"type": "string"}}}
GRAMMAR_REQUESTS = {
    "json schema": {"response_format": {"type": "json_schema", "json_schema": {
        "name": "place", "schema": PLACE, "strict": True}}},
    "tool call": {"tools": [{"type": "function", "function": {"name": "find_place", "parameters": PLACE}}],
                  "tool_choice": "required"},
}


@pytest.mark.parametrize("kind", GRAMMAR_REQUESTS)
def test_a_grammar_answer_is_the_same_with_ngram(smol_hosts, kind):
    request = parse_chat_request({
        "model": "m", "max_tokens": 80, "temperature": 0, "seed": 1, **GRAMMAR_REQUESTS[kind],
        "messages": [{"role": "user", "content": "Paris is in France. Give the city and country of Paris, "
                                                 "as city and country."}]})
    expected, plain_finish = host_request(smol_hosts["off"].port(), request)
    text, finish = host_request(smol_hosts["ngram"].port(), request)
    calls = [(call["name"], call["arguments"]) for call in finish.get("tool_calls", [])]
    assert (text, calls) == (expected, [(call["name"], call["arguments"])
                                        for call in plain_finish.get("tool_calls", [])])
    answer = calls[0][1] if kind == "tool call" else text
    assert set(json.loads(answer)) == {"city", "country"}
    # Proposals were checked under the grammar (the tool call accepts some, on this build).
    assert finish["speculative"]["mode"] == "ngram" and finish["speculative"]["proposed"] > 0
