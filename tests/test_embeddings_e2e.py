"""POST /v1/embeddings on real nodes through the official openai SDK: a tiny BERT embeds, a request
through a node without the model is forwarded to its host, and the bundled Gemma (generative)
refuses with a 400 that names it, whichever node the request came in through.

One mesh for the module: the host serves the embedder and the member serves Gemma, so each node
forwards one of the two models to the other over the api tunnel.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from tests.embedding_model import CONTEXT, DIMENSIONS, write_tiny_bert
from tests.nodes import poll, start_node

pytestmark = pytest.mark.slow

EMBEDDER = "tiny-embedder"
GEMMA = "gemma-3-270m-q4_k_m"


def states(node) -> dict[str, str]:
    return {model["id"]: model["state"] for model in node.status()["models"]}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, default_model_path):
    """(host of the embedder, member hosting Gemma); each reaches the other's model remotely."""
    embedder = write_tiny_bert(tmp_path_factory.mktemp("embedder") / f"{EMBEDDER}.gguf")
    nodes = []
    try:
        host = start_node(tmp_path_factory.mktemp("host"), "--model", str(embedder),
                          "--model", str(default_model_path), "--threads", "1")
        nodes.append(host)
        member_home = tmp_path_factory.mktemp("member")
        (member_home / "models").mkdir()
        os.link(default_model_path, member_home / "models" / default_model_path.name)
        member = start_node(member_home, "--join", host.invite_token(), "--threads", "1")
        nodes.append(member)
        poll(lambda: states(host) == {EMBEDDER: "ready", GEMMA: "remote"}
             and states(member) == {EMBEDDER: "remote", GEMMA: "ready"}, 90,
             message=f"each node to serve one model: {nodes[0].describe()}")
        yield host, member
    finally:
        for node in nodes:
            node.stop()


def vectors_of(response) -> list[np.ndarray]:
    return [np.array(item.embedding) for item in response.data]


def post(node, body) -> tuple[int, dict]:
    request = urllib.request.Request(f"{node.base_url}/embeddings", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_unit_vectors_floats_and_base64_the_same_for_the_same_text(mesh):
    host, _ = mesh
    texts = ["hello world", "the cat sat on the mat", "hello world"]
    # The SDK asks for base64 unless told otherwise, and decodes it to floats itself.
    as_base64 = host.client().embeddings.create(model=EMBEDDER, input=texts)
    as_floats = host.client().embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    assert as_base64.object == "list" and as_base64.model == EMBEDDER
    assert [item.index for item in as_base64.data] == [0, 1, 2]
    assert all(item.object == "embedding" for item in as_base64.data)
    for response in (as_base64, as_floats):
        vectors = vectors_of(response)
        assert all(vector.shape == (DIMENSIONS,) for vector in vectors)
        assert all(abs(np.linalg.norm(vector) - 1) < 1e-5 for vector in vectors)
        assert np.array_equal(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert all(np.array_equal(a, b) for a, b in zip(vectors_of(as_base64), vectors_of(as_floats)))
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens > len(texts)
    one = host.client().embeddings.create(model=EMBEDDER, input="hello world", dimensions=DIMENSIONS)
    assert np.array_equal(vectors_of(one)[0], vectors_of(as_floats)[0])


def test_a_node_without_the_model_forwards_it_to_the_host(mesh):
    host, member = mesh
    texts = ["forwarded over the mesh", "hello world"]
    there = vectors_of(member.client().embeddings.create(model=EMBEDDER, input=texts))
    here = vectors_of(host.client().embeddings.create(model=EMBEDDER, input=texts))
    assert all(np.array_equal(a, b) for a, b in zip(there, here))
    requests = {model["id"]: model.get("requests") for model in host.status()["models"]}
    assert requests[EMBEDDER] >= 2  # the member's request was answered by the host's model


@pytest.mark.parametrize("through", ["host", "member"])
def test_gemma_cannot_embed_a_400_naming_it(mesh, through):
    node = dict(zip(("host", "member"), mesh))[through]  # the host forwards to the member, which has Gemma
    with pytest.raises(openai.BadRequestError) as caught:
        node.client().embeddings.create(model=GEMMA, input="hello")
    error = caught.value.body
    assert f"'{GEMMA}' cannot embed" in error["message"] and error["param"] == "model", error


@pytest.mark.parametrize("through", ["host", "member"])
def test_the_embedder_does_not_chat_a_400_naming_it(mesh, through):
    node = dict(zip(("host", "member"), mesh))[through]
    with pytest.raises(openai.BadRequestError) as caught:
        node.client().chat.completions.create(model=EMBEDDER, messages=[{"role": "user", "content": "hi"}])
    assert f"'{EMBEDDER}' is an embedding model" in caught.value.body["message"]
    assert caught.value.body["param"] == "model"


@pytest.mark.parametrize("body, param", [
    ({"model": EMBEDDER}, "input"),
    ({"model": EMBEDDER, "input": ""}, "input"),
    ({"model": EMBEDDER, "input": [101, 2023, 102]}, "input"),
    ({"model": EMBEDDER, "input": [[101, 102]]}, "input"),
    ({"model": EMBEDDER, "input": ["fine", 3]}, "input[1]"),
    ({"model": EMBEDDER, "input": ["fine", "ab" * CONTEXT]}, "input[1]"),  # too long for the model: never cut
    ({"model": EMBEDDER, "input": "a", "dimensions": DIMENSIONS // 2}, "dimensions"),
    ({"model": EMBEDDER, "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"model": EMBEDDER, "input": "a", "truncate": "END"}, "truncate"),
    ({"input": "a"}, "model"),
])
@pytest.mark.parametrize("through", ["host", "member"])
def test_malformed_requests_are_400s_naming_the_field_and_the_node_serves_on(mesh, through, body, param):
    node = dict(zip(("host", "member"), mesh))[through]
    status, answer = post(node, body)
    assert status == 400 and answer["error"]["param"] == param, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert len(node.client().embeddings.create(model=EMBEDDER, input="still serving").data) == 1
