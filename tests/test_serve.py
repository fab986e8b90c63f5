"""`POST /api/serve` then `POST /api/drop` on a real `meshdesk --headless` node: a model in its
models folder, named as `--model` names it, is planned on this node, then gone."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.nodes import poll
from tests.test_api import assert_openai_error, post_raw

pytestmark = pytest.mark.slow

OTHER = "other-model"


@pytest.fixture
def home(tmp_path, default_model_path):
    """The bundled model, and a second file (another digest) that llama.cpp still loads."""
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    os.link(default_model_path, models / default_model_path.name)
    shutil.copyfile(default_model_path, models / f"{OTHER}.gguf")
    with open(models / f"{OTHER}.gguf", "ab") as file:
        file.write(b"\0" * 4096)
    return tmp_path / "home"


def post(node, path: str, body: dict):
    return post_raw(node, path, json.dumps(body).encode())


def plans_by_model(node) -> dict[str, dict]:
    return {plan["model"]: plan for plan in node.status()["plans"]}


def test_serve_plans_the_model_here_and_drop_removes_it(node_factory, home):
    node = node_factory("--threads", "1", home=home)
    poll(lambda: "SmolLM2-135M-Instruct.Q4_1" in plans_by_model(node), 30, message="the default model's plan")

    status, body = post(node, "/api/serve", {"model": OTHER})
    assert (status, body) == (200, {"serving": OTHER})
    assert node.status()["wants"][0] == OTHER
    plan = poll(lambda: plans_by_model(node).get(OTHER), 30, message="a plan for the served model")
    assert plan["host"] == node.node_id

    status, body = post(node, "/api/drop", {"model": OTHER})
    assert status == 200
    poll(lambda: OTHER not in plans_by_model(node), 30, message="the dropped model's plan to go")
    assert OTHER not in node.status()["wants"]


def test_serving_an_unknown_model_is_a_400_that_says_why(node_factory, home):
    node = node_factory("--threads", "1", home=home)
    status, body = post(node, "/api/serve", {"model": "no-such-model"})
    error = assert_openai_error(body)
    assert status == 400 and error["param"] == "model" and "unknown model 'no-such-model'" in error["message"]
    status, body = post(node, "/api/serve", {"model": ""})
    assert status == 400 and assert_openai_error(body)["param"] == "model"
