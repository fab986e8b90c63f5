"""POST /v1/embeddings over real HTTP (`adapters/embeddings_routes.py` in the real `OpenAiServer`),
in front of a gateway that answers whatever events a test scripts: what a broken or refusing host
becomes for the client, through the official openai SDK."""

from __future__ import annotations

import base64
import http.client
import json

import numpy as np
import openai
import pytest

from meshdesk.adapters import embeddings_routes
from meshdesk.adapters.openai_server import OpenAiServer
from meshdesk.core.local_api_policy import ApiAccess
from tests.threaded_server import serving

VECTORS = [[0.6, 0.8], [1.0, 0.0]]


def vector_event(index: int, values) -> dict:
    return {"type": "embedding", "index": index,
            "embedding": base64.b64encode(np.array(values, dtype="<f4").tobytes()).decode()}


FINISH = {"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": 5, "completion_tokens": 0}}
GOOD = [vector_event(0, VECTORS[0]), vector_event(1, VECTORS[1]), FINISH]


class ScriptedGateway:
    """Answers every request with `events`; records the requests and whether each was closed."""

    def __init__(self):
        self.events: list[dict] = GOOD
        self.requests, self.closed = [], 0

    async def generate(self, request):
        self.requests.append(request)
        try:
            for event in self.events:
                yield event
        finally:
            self.closed += 1


@pytest.fixture(scope="module")
def api():
    gateway = ScriptedGateway()
    server = OpenAiServer(gateway, ApiAccess("secret-" + "s" * 32), routes=(embeddings_routes.add_routes,))
    with serving(server) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=10)
        yield gateway, client, port


@pytest.fixture
def gateway(api):
    gateway = api[0]
    gateway.events, gateway.requests, gateway.closed = GOOD, [], 0
    return gateway


def test_the_hosts_vectors_in_openais_shape(api, gateway):
    _, client, _ = api
    for encoding in ("base64", "float"):
        response = client.embeddings.create(model="m", input=["a", "b"], encoding_format=encoding)
        assert response.model == "m" and response.usage.prompt_tokens == response.usage.total_tokens == 5
        embeddings = [item.embedding for item in response.data]
        if encoding == "base64":  # asked for by name, the SDK leaves the text as it is
            embeddings = [np.frombuffer(base64.b64decode(text), dtype="<f4").tolist() for text in embeddings]
        assert np.allclose(embeddings, VECTORS) and [item.index for item in response.data] == [0, 1]
    assert [request.input for request in gateway.requests] == [("a", "b")] * 2
    assert gateway.closed == 2


@pytest.mark.parametrize("events, words", [
    ([vector_event(0, VECTORS[0]), FINISH], "input[1]"),
    ([vector_event(0, VECTORS[0]), {"type": "embedding", "index": 1, "embedding": "%%%"}, FINISH], "base64"),
    ([vector_event(0, VECTORS[0]), vector_event(1, [1.0, 0.0, 0.0]), FINISH], "one length"),
    ([vector_event(0, VECTORS[0]), vector_event(7, VECTORS[1]), FINISH], "index 7"),
    ([vector_event(0, VECTORS[0]), vector_event(1, VECTORS[1])], "ended before"),  # no finish
    ([{"type": "error", "kind": "server", "message": "the model host crashed"}], "crashed"),
])
def test_a_broken_host_is_a_500_never_a_wrong_answer(api, gateway, events, words):
    gateway.events = events
    with pytest.raises(openai.InternalServerError) as caught:
        api[1].embeddings.create(model="m", input=["a", "b"])
    assert words in caught.value.body["message"] and caught.value.body["type"] == "server_error"
    assert gateway.closed == 1


def test_the_hosts_request_error_is_the_clients_400_naming_its_field(api, gateway):
    gateway.events = [{"type": "error", "kind": "request", "message": "the model 'm' cannot embed", "param": "model"}]
    with pytest.raises(openai.BadRequestError) as caught:
        api[1].embeddings.create(model="m", input="a")
    assert caught.value.body["message"] == "the model 'm' cannot embed" and caught.value.body["param"] == "model"


def test_dimensions_are_checked_against_the_vectors(api, gateway):
    assert len(api[1].embeddings.create(model="m", input=["a", "b"], dimensions=2).data) == 2
    with pytest.raises(openai.BadRequestError) as caught:
        api[1].embeddings.create(model="m", input=["a", "b"], dimensions=3)
    assert caught.value.body["param"] == "dimensions"


def test_a_bad_body_never_reaches_the_gateway(api, gateway):
    for body, param in [(b"{not json", None), (b'{"model": "m", "input": [1, 2]}', "input"),
                        (b'{"model": "m", "input": "a", "stream": true}', "stream")]:
        status, answer = post(api[2], body)
        assert status == 400 and answer["error"]["param"] == param, answer
    assert gateway.requests == []


def test_the_local_api_policy_guards_it_like_chat(api, gateway):
    status, answer = post(api[2], b'{"model": "m", "input": "a"}', Origin="http://evil.example")
    assert status == 403 and gateway.requests == [], answer


def post(port: int, body: bytes, **headers) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()
