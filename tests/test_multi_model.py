"""Several models in one mesh: assignment, routing by model, drop, and spreading replicas."""

from __future__ import annotations

import concurrent.futures
import os
import shutil

import pytest

from tests.nodes import poll, run_meshdesk

pytestmark = pytest.mark.slow

GEMMA = "gemma-3-270m-q4_k_m"
OTHER = "other-model"


@pytest.fixture(scope="module")
def other_model(tmp_path_factory, default_model_path):
    """A second, different file (another digest) that llama.cpp still loads: the same weights
    with trailing bytes, which GGUF readers ignore."""
    path = tmp_path_factory.mktemp("other") / f"{OTHER}.gguf"
    shutil.copyfile(default_model_path, path)
    with open(path, "ab") as file:
        file.write(b"\0" * 4096)
    return path


def home_with(tmp_path, name: str, *models):
    home = tmp_path / name
    (home / "models").mkdir(parents=True)
    for model in models:
        os.link(model, home / "models" / model.name)
    return home


def model_ids(node) -> list[str]:
    return sorted(model.id for model in node.client().models.list().data)


def states(node) -> dict[str, str]:
    return {model["id"]: model["state"] for model in node.status()["models"]}


def ask(node, model: str) -> str:
    return node.client().completions.create(model=model, prompt="Hello", max_tokens=3,
                                            temperature=0).choices[0].text


def test_a_joiner_serves_the_model_nobody_serves_and_requests_are_routed(
        node_factory, tmp_path, default_model_path, other_model):
    seeder = node_factory("--model", str(default_model_path), "--model", str(other_model), "--threads", "1")
    poll(lambda: states(seeder).get(OTHER) == "waiting", 30, message="the second model to wait for a node")
    joiner = node_factory("--join", seeder.invite_token(), "--threads", "1",
                          home=home_with(tmp_path, "joiner", default_model_path, other_model))
    poll(lambda: states(joiner).get(OTHER) == "ready" and states(seeder).get(GEMMA) == "ready", 60,
         message="each node to serve one model")
    assert states(seeder)[OTHER] == "remote" and states(joiner)[GEMMA] == "remote"
    for node in (seeder, joiner):
        assert model_ids(node) == [GEMMA, OTHER]
        assert ask(node, GEMMA) and ask(node, OTHER)

    result = run_meshdesk("drop", OTHER, "--home", str(seeder.home))
    assert result.returncode == 0, result.stderr
    poll(lambda: model_ids(seeder) == [GEMMA] and model_ids(joiner) == [GEMMA], 30,
         message="the dropped model to leave the mesh")
    result = run_meshdesk("drop", OTHER, "--home", str(seeder.home))
    assert result.returncode == 2 and "does not serve" in result.stderr


def test_requests_spread_across_solo_replicas(node_factory, tmp_path, default_model_path):
    seeder = node_factory("--model", str(default_model_path), "--threads", "1")
    replica = node_factory("--join", seeder.invite_token(), "--threads", "1",
                           home=home_with(tmp_path, "replica", default_model_path))
    client = node_factory("--client", "--join", seeder.invite_token())
    poll(lambda: states(seeder).get(GEMMA) == "ready" and states(replica).get(GEMMA) == "ready"
         and len(client.status()["plans"]) == 2, 60, message="two solo replicas")

    def long_answer(_):
        return client.client().completions.create(model=GEMMA, prompt="1, 2, 3, 4,", max_tokens=48,
                                                  temperature=0).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(long_answer, range(4)))
    served = [node.status()["models"][0]["requests"] for node in (seeder, replica)]
    assert all(count >= 1 for count in served), served


SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1"


def test_two_architectures_are_served_together_and_tools_cross_the_mesh(
        node_factory, tmp_path, default_model_path, smollm2_model_path):
    """Gemma 3 (fallback template) and SmolLM2 (llama, its own ChatML template) in one mesh: each
    node serves one, and both answer from either node, a forced tool call too."""
    import json

    seeder = node_factory("--model", "gemma-3-270m", "--model", "smollm2", "--threads", "1",
                          home=home_with(tmp_path, "seeder", default_model_path, smollm2_model_path))
    joiner = node_factory("--join", seeder.invite_token(), "--threads", "1",
                          home=home_with(tmp_path, "joiner", default_model_path, smollm2_model_path))
    poll(lambda: {states(seeder).get(GEMMA), states(seeder).get(SMOLLM2)} == {"ready", "remote"}
         and {states(joiner).get(GEMMA), states(joiner).get(SMOLLM2)} == {"ready", "remote"}, 90,
         message="each node to serve one of the two models")
    tool = {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "required": ["a", "b"], "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}
    for node in (seeder, joiner):
        assert model_ids(node) == sorted([GEMMA, SMOLLM2])
        client = node.client()
        for model in (GEMMA, SMOLLM2):
            answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=4, temperature=0)
            assert answer.model == model and answer.choices[0].message.content
        call = client.chat.completions.create(
            model=SMOLLM2, messages=[{"role": "user", "content": "Add 2 and 3."}], tools=[tool],
            tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=40).choices[0]
        assert call.finish_reason == "tool_calls" and call.message.tool_calls[0].function.name == "add"
        assert set(json.loads(call.message.tool_calls[0].function.arguments)) == {"a", "b"}
