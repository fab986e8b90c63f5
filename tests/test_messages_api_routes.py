"""The agents' routes (`adapters/agent_apis`) over real HTTP in the real `OpenAiServer`, in front of
a gateway that answers whatever events (or raises whatever failure) a test scripts: what a
refusing, missing or broken host becomes for the official anthropic and openai SDKs, before the
status line and after it, and that every answer's events are closed."""

from __future__ import annotations

import http.client
import json

import anthropic
import openai
import pytest

from meshdesk.adapters import agent_apis
from meshdesk.adapters.openai_server import OpenAiServer
from meshdesk.core.local_api_policy import ApiAccess
from meshdesk.node.interfaces import ModelUnavailable, UnknownModel
from tests.threaded_server import serving

FINISH = {"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": 9, "completion_tokens": 2}}
GOOD = [{"type": "delta", "text": "Hel"}, {"type": "delta", "text": "lo"}, FINISH]
ASK = [{"role": "user", "content": "Hi."}]


class ScriptedGateway:
    """Answers every request with `events`, raising those that are exceptions; records the
    requests and how many answers were closed."""

    def __init__(self):
        self.events: list = GOOD
        self.requests, self.closed = [], 0

    async def generate(self, request):
        self.requests.append(request)
        try:
            for event in self.events:
                if isinstance(event, Exception):
                    raise event
                yield event
        finally:
            self.closed += 1


KEY = "sk-local-" + "k" * 24


@pytest.fixture(scope="module")
def api():
    """A server whose /v1 needs KEY, as `--api-key` makes it."""
    gateway = ScriptedGateway()
    server = OpenAiServer(gateway, ApiAccess("secret-" + "s" * 32, api_key=KEY), routes=(agent_apis.add_routes,))
    with serving(server) as port:
        yield gateway, port


@pytest.fixture
def gateway(api):
    gateway = api[0]
    gateway.events, gateway.requests, gateway.closed = GOOD, [], 0
    return gateway


@pytest.fixture
def claude(api):
    # This SDK sends its key as "Authorization: Bearer"; older ones and other clients send x-api-key.
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{api[1]}", api_key=KEY, max_retries=0, timeout=10)


@pytest.fixture
def responses(api):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{api[1]}/v1", api_key=KEY, max_retries=0, timeout=10).responses


def test_an_answer_whole_and_streamed_and_each_closed(gateway, claude, responses):
    assert claude.messages.create(model="m", max_tokens=5, messages=ASK).content[0].text == "Hello"
    with claude.messages.stream(model="m", max_tokens=5, messages=ASK) as stream:
        assert stream.get_final_message().content[0].text == "Hello"
    assert responses.create(model="m", input="Hi.").output_text == "Hello"
    with responses.stream(model="m", input="Hi.") as stream:
        assert stream.get_final_response().output_text == "Hello"
    assert len(gateway.requests) == gateway.closed == 4


@pytest.mark.parametrize("failure, status, kind", [
    (UnknownModel("no model 'm' here"), 404, "not_found_error"),
    (ModelUnavailable("the model is loading", retry_after=7), 529, "overloaded_error"),
    ({"type": "error", "kind": "request", "message": "the prompt is longer than the context"}, 400,
     "invalid_request_error"),
    ({"type": "error", "kind": "server", "message": "the model host crashed"}, 500, "api_error"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_failure_before_any_output_has_its_status_in_anthropics_shape(gateway, claude, failure, status, kind,
                                                                          stream):
    gateway.events = [failure]
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model="m", max_tokens=5, messages=ASK, stream=stream)
    error = caught.value
    assert error.status_code == status and error.body["type"] == "error" and error.body["error"]["type"] == kind
    if status == 529:
        assert error.response.headers["Retry-After"] == "7"
    assert gateway.closed == 1


BAD_CALL = {"type": "finish", "finish_reason": "tool_calls", "usage": {},
            "tool_calls": [{"id": "c", "name": "f", "arguments": "[1]"}]}


@pytest.mark.parametrize("events, words", [
    ([{"type": "delta", "text": "Hel"}, {"type": "error", "kind": "server", "message": "host lost"}], "host lost"),
    ([{"type": "delta", "text": "Hel"}, BAD_CALL], "not a JSON object"),
])
def test_a_stream_that_breaks_off_ends_with_anthropics_error_event(gateway, claude, events, words):
    gateway.events = events
    with pytest.raises(anthropic.APIStatusError) as caught:
        with claude.messages.stream(model="m", max_tokens=5, messages=ASK) as stream:
            list(stream.text_stream)
    assert words in str(caught.value) and caught.value.body["error"]["type"] == "api_error"
    assert gateway.closed == 1


def test_a_tool_call_that_cannot_be_shaped_is_a_500(gateway, claude):
    gateway.events = [BAD_CALL]
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model="m", max_tokens=5, messages=ASK)
    assert caught.value.body["error"]["type"] == "api_error"


def test_count_tokens_is_a_one_token_answers_prompt(gateway, claude):
    assert claude.messages.count_tokens(model="m", messages=ASK).input_tokens == 9
    assert gateway.requests[0].max_tokens == 1 and not gateway.requests[0].stream


def test_a_bad_body_never_reaches_the_gateway(gateway, claude):
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="m", max_tokens=5, messages=ASK, extra_body={"top_k": 3})
    assert caught.value.body["error"] == {"type": "invalid_request_error",
                                          "message": "top_k: Extra inputs are not permitted"}
    assert gateway.requests == []


@pytest.mark.parametrize("failure, error", [
    (UnknownModel("no model 'm' here"), openai.NotFoundError),
    (ModelUnavailable("the model is loading"), openai.InternalServerError),
    ({"type": "error", "kind": "request", "message": "too long"}, openai.BadRequestError),
    ({"type": "error", "kind": "server", "message": "the model host crashed"}, openai.InternalServerError),
])
def test_a_responses_failure_before_any_output_is_an_openai_error(gateway, responses, failure, error):
    gateway.events = [failure]
    with pytest.raises(error) as caught:
        responses.create(model="m", input="Hi.", stream=True)
    assert set(caught.value.body) >= {"message", "type"} and gateway.closed == 1


def test_a_responses_stream_that_breaks_off_ends_failed(gateway, responses):
    gateway.events = [{"type": "delta", "text": "Hel"}, ModelUnavailable("the host left the mesh")]
    events = list(responses.create(model="m", input="Hi.", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.message == "the host left the mesh"
    assert gateway.closed == 1


def test_a_stored_response_is_not_found_saying_why(gateway, responses):
    with pytest.raises(openai.NotFoundError) as caught:
        responses.retrieve("resp_123")
    assert "keeps no responses" in caught.value.body["message"] and gateway.requests == []


def post(port: int, path: str, headers: dict, method: str = "POST") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"model": "m", "max_tokens": 5, "messages": ASK}) if method == "POST" else None
    connection.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **headers})
    answer = connection.getresponse()
    status, text = answer.status, answer.read()
    connection.close()
    return status, dict(answer.getheaders()) | {"body": text}


def test_the_key_opens_the_agents_routes_and_a_web_page_still_cannot_use_them(api, gateway):
    port = api[1]
    honest = {"Content-Type": "application/json", "x-api-key": KEY}
    assert post(port, "/v1/messages", honest)[0] == 200
    assert post(port, "/v1/messages", {"Content-Type": "application/json"})[0] == 401
    assert post(port, "/v1/responses", {"Content-Type": "application/json", "x-api-key": "wrong"})[0] == 401
    # A page that knows the key: its requests carry its Origin, which was never allowed.
    evil = {"Origin": "https://evil.example"}
    status, answer = post(port, "/v1/messages", honest | evil)
    assert status == 403 and "Access-Control-Allow-Origin" not in answer
    status, answer = post(port, "/v1/messages", evil | {
        "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,content-type"},
        method="OPTIONS")
    assert status == 403 and "Access-Control-Allow-Origin" not in answer
    assert post(port, "/v1/messages", {"Content-Type": "text/plain", "x-api-key": KEY})[0] == 415
    assert len(gateway.requests) == 1
