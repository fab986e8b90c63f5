"""Tool calls over real HTTP (`adapters/openai_server.py`), in front of a gateway that answers
whatever events a test scripts, read by the official openai SDK: message.tool_calls and finish
reason tool_calls, OpenAI's streamed tool-call deltas, and the 400s that name a field."""

from __future__ import annotations

import http.client
import json

import openai
import pytest

from meshdesk.adapters.openai_server import OpenAiServer
from meshdesk.core.local_api_policy import ApiAccess
from tests.threaded_server import serving

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}
USAGE = {"prompt_tokens": 20, "completion_tokens": 9}
CALLS = [{"id": "call_host1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
         {"name": "search", "arguments": "{}"}]  # the second without an id: the adapter makes one
WITH_CALLS = [{"type": "delta", "text": "Let me check."},
              {"type": "finish", "finish_reason": "tool_calls", "tool_calls": CALLS, "usage": USAGE}]
PLAIN = [{"type": "delta", "text": "Hello"}, {"type": "finish", "finish_reason": "stop", "usage": USAGE}]
HI = [{"role": "user", "content": "Weather in Paris?"}]


class ScriptedGateway:
    def __init__(self):
        self.events: list[dict] = WITH_CALLS
        self.requests: list = []

    async def generate(self, request):
        self.requests.append(request)
        for event in self.events:
            yield event


@pytest.fixture(scope="module")
def api():
    gateway = ScriptedGateway()
    server = OpenAiServer(gateway, ApiAccess("secret-" + "s" * 32))
    with serving(server) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=10)
        yield gateway, client, port


@pytest.fixture
def gateway(api):
    gateway = api[0]
    gateway.events, gateway.requests = WITH_CALLS, []
    return gateway


def raw_post(port: int, body: dict) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/v1/chat/completions", json.dumps(body),
                       {"Content-Type": "application/json", "Host": f"127.0.0.1:{port}"})
    response = connection.getresponse()
    return response.status, response.read()


def test_a_whole_answer_carries_its_calls_in_openais_shape(api, gateway):
    _, client, _ = api
    reply = client.chat.completions.create(model="m", messages=HI, tools=[WEATHER, SEARCH], tool_choice="auto")
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    first, second = choice.message.tool_calls
    assert (first.id, first.type, first.function.name, first.function.arguments) == \
        ("call_host1", "function", "get_weather", '{"city":"Paris"}')
    assert second.id.startswith("call_") and len(second.id) == len("call_") + 24 and second.function.name == "search"
    request = gateway.requests[0]
    assert [tool["name"] for tool in request.tools] == ["get_weather", "search"]
    assert request.tools[0]["parameters"] == WEATHER["function"]["parameters"] and request.tool_choice == "auto"


def test_content_is_null_when_the_model_only_called(api, gateway):
    _, client, port = api
    gateway.events = [WITH_CALLS[-1]]
    status, raw = raw_post(port, {"model": "m", "messages": HI, "tools": [WEATHER, SEARCH]})
    message = json.loads(raw)["choices"][0]["message"]
    assert status == 200 and message["content"] is None and len(message["tool_calls"]) == 2
    gateway.events = PLAIN  # and an answer without calls has no tool_calls at all
    status, raw = raw_post(port, {"model": "m", "messages": HI, "tools": [WEATHER]})
    body = json.loads(raw)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert body["choices"][0]["finish_reason"] == "stop"


def test_streamed_calls_arrive_as_openais_deltas(api, gateway):
    _, client, port = api
    status, raw = raw_post(port, {"model": "m", "messages": HI, "tools": [WEATHER, SEARCH], "stream": True})
    assert status == 200
    events = [json.loads(line[len(b"data: "):]) for line in raw.split(b"\n\n")
              if line.startswith(b"data: {")]
    deltas = [event["choices"][0]["delta"] for event in events if event["choices"]]
    calls = [delta["tool_calls"] for delta in deltas if "tool_calls" in delta]
    assert calls[0] == [{"index": 0, "id": "call_host1", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]
    assert calls[1] == [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]
    assert calls[2][0]["index"] == 1 and calls[2][0]["function"] == {"name": "search", "arguments": ""}
    assert calls[3] == [{"index": 1, "function": {"arguments": "{}"}}]
    assert [event["choices"][0]["finish_reason"] for event in events if event["choices"]][-1] == "tool_calls"
    assert "".join(delta.get("content") or "" for delta in deltas) == "Let me check."
    assert raw.endswith(b"data: [DONE]\n\n")


def test_without_parallel_tool_calls_only_the_first_call_is_given(api, gateway):
    _, client, _ = api
    reply = client.chat.completions.create(model="m", messages=HI, tools=[WEATHER, SEARCH], parallel_tool_calls=False)
    assert [call.function.name for call in reply.choices[0].message.tool_calls] == ["get_weather"]


def test_the_sdks_stream_helper_assembles_the_calls(api, gateway):
    _, client, _ = api
    with client.chat.completions.stream(model="m", messages=HI, tools=[WEATHER, SEARCH]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and message.content == "Let me check."
    assert [(call.function.name, call.function.arguments) for call in message.tool_calls] == \
        [("get_weather", '{"city":"Paris"}'), ("search", "{}")]


def test_a_conversation_with_calls_and_results_reaches_the_gateway_flat(api, gateway):
    _, client, _ = api
    gateway.events = PLAIN
    client.chat.completions.create(model="m", tools=[WEATHER], messages=[
        *HI,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}])
    assert gateway.requests[0].messages[1:] == (
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}]},
        {"role": "tool", "content": "sunny, 21 C", "tool_call_id": "call_1"})


def test_fields_that_cannot_change_the_answer_are_accepted(api, gateway):
    _, client, _ = api
    gateway.events = PLAIN
    reply = client.chat.completions.create(
        model="m", messages=HI, user="u1", metadata={"k": "v"}, store=False, service_tier="auto",
        prompt_cache_key="agent-7", reasoning_effort="low", logprobs=False, n=1, parallel_tool_calls=False,
        tools=[WEATHER], presence_penalty=0.5, frequency_penalty=-0.5)
    assert reply.choices[0].message.content == "Hello"
    request = gateway.requests[0]
    assert request.parallel_tool_calls is False
    assert (request.presence_penalty, request.frequency_penalty) == (0.5, -0.5)


@pytest.mark.parametrize("extra, param, words", [
    ({"logprobs": True}, "logprobs", "log probabilities are not supported"),
    ({"top_logprobs": 3}, "top_logprobs", "not supported"),
    ({"n": 2}, "n", "only n=1"),
    ({"modalities": ["text", "audio"]}, "modalities", "only text"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio", "audio is not supported"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction", "not supported"),
    ({"web_search_options": {}}, "web_search_options", "web search"),
    ({"logit_bias": {"50256": -100}}, "logit_bias", "logit bias"),
    ({"top_k": 40}, "top_k", "not supported"),
    ({"verbosity": "low"}, "verbosity", "not supported"),
    ({"functions": [{"name": "f"}]}, "functions", "send 'tools'"),
    ({"function_call": "auto"}, "function_call", "deprecated"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type", "only function tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "letters"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "unique"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "search"}}},
     "tool_choice.function.name", "not among 'tools'"),
    ({"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", '"sometimes"'),
    ({"response_format": {"type": "xml"}}, "response_format.type", '"xml"'),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
     "response_format.json_schema.schema", "JSON Schema object"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "a", "schema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}}}},
     "response_format.json_schema.schema.properties.n.minimum", "'minimum'"),
    ({"presence_penalty": 3}, "presence_penalty", "from -2 to 2"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", "boolean"),
])
def test_what_we_do_not_support_is_a_400_naming_the_field(api, gateway, extra, param, words):
    _, client, _ = api
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=HI, extra_body=extra)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error
    assert gateway.requests == []  # refused before any routing


@pytest.mark.parametrize("message, param", [
    ({"role": "tool", "content": "x"}, "messages[1].tool_call_id"),
    ({"role": "user", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
     "messages[1].tool_calls"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f",
                                                                                       "arguments": "{oops"}}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     "messages[1].tool_calls[0].id"),
    ({"role": "assistant", "content": "x", "function_call": {"name": "f", "arguments": "{}"}},
     "messages[1].function_call"),
    ({"role": "function", "name": "f", "content": "x"}, "messages[1].role"),
])
def test_malformed_tool_messages_are_400s_naming_them(api, gateway, message, param):
    _, client, _ = api
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[*HI, message])
    assert caught.value.body["param"] == param


def test_a_completion_with_unknown_or_unsupported_fields_is_refused_by_name(api, gateway):
    _, client, _ = api
    for extra, param in (({"echo": True}, "echo"), ({"best_of": 3}, "best_of"), ({"tools": [WEATHER]}, "tools"),
                         ({"suffix": "x"}, "suffix"), ({"logprobs": 2}, "logprobs")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model="m", prompt="1, 2,", extra_body=extra)
        assert caught.value.body["param"] == param
    gateway.events = PLAIN
    reply = client.completions.create(model="m", prompt="1, 2,", user="u", echo=False, best_of=1, logprobs=None,
                                      presence_penalty=1)
    assert reply.choices[0].text == "Hello" and gateway.requests[0].presence_penalty == 1.0


@pytest.mark.parametrize("calls", [
    [{"id": "c", "name": "get weather", "arguments": "{}"}],
    [{"id": "c", "name": "get_weather", "arguments": {"city": "Paris"}}],
    "not a list",
])
def test_a_host_sending_malformed_calls_is_a_server_error_not_a_half_answer(api, gateway, calls):
    _, client, port = api
    gateway.events = [{"type": "finish", "finish_reason": "tool_calls", "tool_calls": calls, "usage": USAGE}]
    status, raw = raw_post(port, {"model": "m", "messages": HI, "tools": [WEATHER]})
    assert status == 500 and "tool call" in json.loads(raw)["error"]["message"]
    status, raw = raw_post(port, {"model": "m", "messages": HI, "tools": [WEATHER], "stream": True})
    assert status == 200 and b'"tool_calls"' not in raw and b'"error"' in raw
