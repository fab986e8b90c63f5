"""POST /v1/embeddings, pure: the body read and bounded, the request on the wire, the host's
events checked and the answer shaped (`core.openai_api.embeddings`); and `node.resume` asking a
lost host's embeddings again."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest

from meshdesk.core.openai_api import GenerationRequest, RequestError, parse_chat_request
from meshdesk.core.openai_api.embeddings import (MAX_EMBEDDING_INPUT_BYTES, MAX_EMBEDDING_INPUTS, EmbeddingAnswer,
                                                 EmbeddingOptions, check_dimensions, embeddings_body,
                                                 read_embedding_options, vector_event)
from meshdesk.core.openai_api.request import parse_embedding_request


def rejected(body: dict, reader=parse_embedding_request) -> RequestError:
    with pytest.raises(RequestError) as caught:
        reader(body)
    assert caught.value.status == 400
    return caught.value


def test_one_text_or_a_list_of_texts():
    assert parse_embedding_request({"model": "m", "input": "hello"}).input == ("hello",)
    request = parse_embedding_request({"model": "m", "input": ["a", "b", "a"]})
    assert (request.kind, request.model, request.input) == ("embedding", "m", ("a", "b", "a"))


@pytest.mark.parametrize("input_value, param, words", [
    (None, "input", "required"),
    ("", "input", "empty"),
    ([], "input", "empty list"),
    ([1, 2, 3], "input", "token ids"),
    ([[1, 2], [3]], "input", "token ids"),
    (["a", ""], "input[1]", "empty"),
    (["a", 5], "input[1]", "must be a string"),
    (["a", {"text": "b"}], "input[1]", "must be a string"),
    (7, "input", "a string or a list of strings"),
    ({"text": "a"}, "input", "a string or a list of strings"),
    (["ok", "\ud800"], "input[1]", "lone surrogate"),
])
def test_bad_input_is_a_400_naming_the_field(input_value, param, words):
    body = {"model": "m"} if input_value is None else {"model": "m", "input": input_value}
    error = rejected(body)
    assert error.param == param and words in error.message, error.message


def test_the_model_is_required():
    assert rejected({"input": "a"}).param == "model"


def test_at_most_so_many_texts_and_bytes():
    assert len(parse_embedding_request({"model": "m", "input": ["a"] * MAX_EMBEDDING_INPUTS}).input) == 2048
    error = rejected({"model": "m", "input": ["a"] * (MAX_EMBEDDING_INPUTS + 1)})
    assert error.param == "input" and "2048" in error.message
    # Bytes as the texts cross the mesh: 3 per character here, so fewer characters fit.
    characters = MAX_EMBEDDING_INPUT_BYTES // 3
    error = rejected({"model": "m", "input": ["\u20ac" * characters]})
    assert error.param == "input" and str(MAX_EMBEDDING_INPUT_BYTES) in error.message
    assert parse_embedding_request({"model": "m", "input": ["\u20ac" * (characters - 10)]})


def test_options_and_unknown_fields():
    assert read_embedding_options({"model": "m", "input": "a"}) == EmbeddingOptions("float", None)
    assert read_embedding_options({"model": "m", "input": "a", "encoding_format": "base64", "dimensions": 32,
                                   "user": "someone"}) == EmbeddingOptions("base64", 32)
    assert read_embedding_options({"encoding_format": None, "dimensions": None, "user": None}) == EmbeddingOptions()
    for body, param in [({"encoding_format": "hex"}, "encoding_format"), ({"dimensions": 0}, "dimensions"),
                        ({"dimensions": "32"}, "dimensions"), ({"dimensions": True}, "dimensions"),
                        ({"user": 5}, "user"), ({"input_type": "query"}, "input_type"),
                        ({"truncate": True}, "truncate")]:
        assert rejected(body, read_embedding_options).param == param, body


def test_the_request_crosses_the_mesh_and_is_checked_again():
    request = parse_embedding_request({"model": "m", "input": ["a", "b"]})
    wire = request.to_wire()
    assert wire["kind"] == "embedding" and wire["input"] == ["a", "b"]
    assert GenerationRequest.from_wire(wire) == request
    for bad in ([], [3], "", None):
        error = rejected(dict(wire, input=bad), GenerationRequest.from_wire)
        assert error.param == "input", bad
    # A chat request relabelled is refused, and other kinds carry no texts on the wire.
    chat_wire = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_wire()
    assert rejected(chat_wire | {"kind": "embedding", "input": ["a"]}, GenerationRequest.from_wire).param == "messages"
    assert rejected(wire | {"prompt": "p"}, GenerationRequest.from_wire).param == "prompt"
    chat = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert "input" not in chat.to_wire() and chat.input == ()


def test_a_vector_crosses_as_base64_float32_exactly():
    vector = [0.6, -0.8, 1e-7, 0.0]
    event = vector_event(3, np.array(vector, dtype=np.float32).tolist())
    assert event["type"] == "embedding" and event["index"] == 3
    answer = EmbeddingAnswer(4)
    for index in range(4):
        answer.add(dict(event, index=index))
    assert answer.complete() == [np.array(vector, dtype=np.float32).tolist()] * 4


def vector_of(values) -> str:
    return base64.b64encode(np.array(values, dtype="<f4").tobytes()).decode()


@pytest.mark.parametrize("event, words", [
    ({"index": 2, "embedding": vector_of([1.0])}, "index 2"),
    ({"index": -1, "embedding": vector_of([1.0])}, "index -1"),
    ({"index": True, "embedding": vector_of([1.0])}, "index true"),
    ({"index": 0, "embedding": [1.0]}, "not base64 text"),
    ({"index": 0, "embedding": "not base64!"}, "not valid base64"),
    ({"index": 0, "embedding": ""}, "one length"),
    ({"index": 0, "embedding": base64.b64encode(b"abc").decode()}, "one length"),
    ({"index": 0, "embedding": vector_of([math.nan, 0.0])}, "NaN"),
    ({"index": 0, "embedding": vector_of([math.inf, 0.0])}, "NaN or infinity"),
])
def test_a_broken_host_answer_is_refused(event, words):
    with pytest.raises(ValueError, match=words):
        EmbeddingAnswer(2).add({"type": "embedding", **event})


def test_vectors_of_different_lengths_or_missing_ones_are_refused():
    answer = EmbeddingAnswer(3)
    answer.add({"index": 0, "embedding": vector_of([1.0, 0.0])})
    with pytest.raises(ValueError, match="one length"):
        answer.add({"index": 1, "embedding": vector_of([1.0, 0.0, 0.0])})
    answer.add({"index": 0, "embedding": vector_of([0.0, 1.0])})  # sent again by a host carrying on
    answer.add({"index": 2, "embedding": vector_of([1.0, 0.0])})
    with pytest.raises(ValueError, match=r"input\[1\]"):
        answer.complete()
    answer.add({"index": 1, "embedding": vector_of([1.0, 0.0])})
    assert answer.complete() == [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]


def test_the_body_as_openai_shapes_it():
    vectors = [[0.6000000238418579, 0.800000011920929], [1.0, 0.0]]
    body = embeddings_body("m", vectors, EmbeddingOptions(), 7)
    assert body == {"object": "list", "model": "m", "usage": {"prompt_tokens": 7, "total_tokens": 7},
                    "data": [{"object": "embedding", "index": 0, "embedding": vectors[0]},
                             {"object": "embedding", "index": 1, "embedding": vectors[1]}]}
    encoded = embeddings_body("m", vectors, EmbeddingOptions("base64"), 7)["data"]
    # What the openai SDK does with base64: float32, little-endian.
    assert [np.frombuffer(base64.b64decode(item["embedding"]), dtype="float32").tolist() for item in encoded] \
        == vectors


def test_dimensions_must_be_the_models_own():
    check_dimensions(EmbeddingOptions(dimensions=None), 32, "m")
    check_dimensions(EmbeddingOptions(dimensions=32), 32, "m")
    with pytest.raises(RequestError) as caught:
        check_dimensions(EmbeddingOptions(dimensions=16), 32, "tiny")
    assert caught.value.param == "dimensions" and "32" in caught.value.message and "tiny" in caught.value.message


def test_an_embedding_whose_host_is_lost_is_asked_again_whole_and_the_last_vectors_count():
    import asyncio

    from meshdesk.node.interfaces import HostLost
    from meshdesk.node.resume import Changes, resumed

    request = parse_embedding_request({"model": "m", "input": ["a", "b"]})
    first = [vector_event(0, [1.0, 0.0])]
    second = [vector_event(0, [0.0, 1.0]), vector_event(1, [0.6, 0.8]), {"type": "finish", "finish_reason": "stop",
                                                                        "usage": {"prompt_tokens": 4}}]
    seen = []

    async def attempt(each, avoid):
        seen.append(each)
        for event in first if len(seen) == 1 else second:
            yield event
        if len(seen) == 1:
            raise HostLost("the link broke", "host-a", node_gone=True)

    async def run():
        return [event async for event in resumed(request, attempt, Changes(), 60, lambda: 0.0)]
    events = asyncio.run(run())
    assert seen == [request, request]  # the same texts again: no continue_from for vectors
    answer = EmbeddingAnswer(2)
    for event in events[:-1]:
        answer.add(event)
    assert answer.complete() == [[0.0, 1.0], np.array([0.6, 0.8], dtype=np.float32).tolist()]
