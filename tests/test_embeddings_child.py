"""The model host child's embeddings (`adapters/llama/embedding.py`) on a real llama.cpp: which
models embed, the vectors they give, and the client's errors, through `host.handle_connection`
as the node's connection reaches it."""

from __future__ import annotations

import base64
import json
import socket

import gguf
import numpy as np
import pytest

from meshdesk.adapters.llama import embedding, host
from meshdesk.core.openai_api import parse_chat_request, parse_completion_request
from meshdesk.core.openai_api.request import parse_embedding_request
from tests.embedding_model import CONTEXT, DIMENSIONS, write_tiny_bert


def loaded(path):
    arguments = host.parse_arguments(["--model", str(path), "--threads", "1"])  # --context 4096, as a node starts it
    return embedding.for_embedding(host.load_model(arguments), arguments)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return loaded(write_tiny_bert(tmp_path_factory.mktemp("embedder") / "tiny-embedder.gguf"))


@pytest.fixture(scope="module")
def generative(tmp_path_factory):
    """The same BERT declaring no pooling type: as far as MeshDesk goes, a generative model."""
    return loaded(write_tiny_bert(tmp_path_factory.mktemp("plain") / "plain.gguf", pooling=None))


def answer(model, request) -> list[dict]:
    """The events the child sends for one request on one connection."""
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(json.dumps(request.to_wire()).encode() + b"\n")
        host.handle_connection(host.HostServer(model, None), ours)  # it closes its end when done
        return [json.loads(line) for line in theirs.makefile("rb").read().splitlines()]


def embed(model, texts) -> tuple[list[np.ndarray], dict]:
    events = answer(model, parse_embedding_request({"model": "tiny-embedder", "input": texts}))
    *vectors, finish = events
    assert [event["type"] for event in vectors] == ["embedding"] * len(texts), events
    assert [event["index"] for event in vectors] == list(range(len(texts)))
    assert finish["type"] == "finish" and finish["finish_reason"] == "stop", finish
    return [np.frombuffer(base64.b64decode(event["embedding"]), dtype="<f4") for event in vectors], finish


def test_a_model_declaring_a_pooling_type_is_loaded_to_embed(embedder, generative):
    assert embedding.embeds(embedder.llama) and not embedding.embeds(generative.llama)
    assert embedding.declared_pooling(embedder.llama.metadata) == gguf.PoolingType.CLS
    assert embedder.llama.n_batch == CONTEXT  # no longer than it was trained for, whatever --context says
    assert generative.llama.n_ctx() == 4096  # a generative model is loaded as before


def test_unit_vectors_the_same_for_the_same_text(embedder):
    texts = ["hello world", "the cat sat", "hello world", "Hello, World!"]
    vectors, finish = embed(embedder, texts)
    assert all(vector.shape == (DIMENSIONS,) for vector in vectors)
    assert all(abs(np.linalg.norm(vector) - 1) < 1e-5 for vector in vectors)
    assert np.array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1]) and not np.allclose(vectors[0], vectors[3])
    tokens = [len(embedder.llama.tokenize(text.encode())) for text in texts]
    assert finish["usage"] == {"prompt_tokens": sum(tokens), "completion_tokens": 0}
    # A text's vector does not depend on what else it came with.
    alone, _ = embed(embedder, ["hello world"])
    assert np.array_equal(alone[0], vectors[0])


def test_a_text_longer_than_the_model_embeds_is_the_clients_error_never_cut_short(embedder):
    too_long = "ab" * CONTEXT  # a token per letter
    events = answer(embedder, parse_embedding_request({"model": "tiny-embedder", "input": ["fine", too_long]}))
    assert len(events) == 1 and events[0]["type"] == "error" and events[0]["kind"] == "request", events
    assert events[0]["param"] == "input[1]"
    assert f"at most {CONTEXT} tokens" in events[0]["message"] and "tiny-embedder" in events[0]["message"]
    assert embed(embedder, ["ab" * (CONTEXT // 2 - 1)])  # the longest text that fits ([CLS] and [SEP] count)


@pytest.mark.parametrize("request_", [
    parse_chat_request({"model": "tiny-embedder", "messages": [{"role": "user", "content": "hi"}]}),
    parse_completion_request({"model": "tiny-embedder", "prompt": "hi"}),
], ids=["chat", "completion"])
def test_an_embedding_model_does_not_generate(embedder, request_):
    events = answer(embedder, request_)
    assert len(events) == 1 and events[0]["kind"] == "request" and events[0]["param"] == "model", events
    assert "'tiny-embedder' is an embedding model" in events[0]["message"]
    assert "/v1/embeddings" in events[0]["message"]


def test_a_generative_model_does_not_embed(generative):
    events = answer(generative, parse_embedding_request({"model": "plain", "input": "hello"}))
    assert len(events) == 1 and events[0]["kind"] == "request" and events[0]["param"] == "model", events
    assert "'plain' cannot embed" in events[0]["message"] and "bert.pooling_type" in events[0]["message"]
    chat = parse_chat_request({"model": "plain", "messages": [{"role": "user", "content": "hi"}]})
    assert not embedding.handles(generative, chat)  # generation goes on as before


def test_a_reranker_does_not_embed_either(tmp_path):
    reranker = loaded(write_tiny_bert(tmp_path / "reranker.gguf", pooling=gguf.PoolingType.RANK))
    assert not embedding.embeds(reranker.llama)
    events = answer(reranker, parse_embedding_request({"model": "reranker", "input": "hello"}))
    assert len(events) == 1 and "'reranker' cannot embed: it is a reranker" in events[0]["message"], events


def test_the_child_notices_the_node_went_away():
    ours, theirs = socket.socketpair()
    with ours:
        assert not embedding.node_gone(ours)
        theirs.close()
        assert embedding.node_gone(ours)
