"""The Anthropic Messages API, pure: bodies read into the generation request (with the 400 that
names each field it cannot honour), answers shaped as the official SDK's types read them, and
the access policy reading Anthropic's `x-api-key` without opening the API to web pages."""

from __future__ import annotations

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from meshdesk.core.anthropic_api import MessageEvents, error_body, parse_messages_request, whole_message
from meshdesk.core.local_api_policy import ApiAccess, judge
from meshdesk.core.openai_api import RequestError

MODEL = "gemma-3-270m-q4_k_m"
TOKEN = "cd" * 12
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = {"id": "call_7", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


def parse(**fields):
    return parse_messages_request({"model": MODEL, "max_tokens": 16,
                                   "messages": [{"role": "user", "content": "Hi."}], **fields})


def test_system_and_content_blocks_become_chat_messages():
    request = parse(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                    messages=[
                        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
                        {"role": "assistant", "content": [
                            {"type": "text", "text": "Checking."},
                            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                        {"role": "user", "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rain",
                             "cache_control": {"type": "ephemeral"}},
                            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                             "content": [{"type": "text", "text": "no such city"}]},
                            {"type": "text", "text": "And now?"}]},
                    ], tools=[WEATHER], metadata={"user_id": "u"}, stop_sequences=["\n\n"], temperature=1,
                    thinking={"type": "disabled"})
    assert request.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Checking.",
         "tool_calls": [{"id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]},
        {"role": "tool", "content": "Rain", "tool_call_id": "toolu_1"},
        {"role": "tool", "content": "Error: no such city", "tool_call_id": "toolu_2"},
        {"role": "user", "content": "And now?"},
    )
    assert (request.max_tokens, request.stop, request.temperature) == (16, ("\n\n",), 1.0)
    assert request.tools == ({"name": "get_weather", "description": "The weather in a city.",
                              "parameters": WEATHER["input_schema"]},)


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, ("auto", None, True)),
    ({"type": "any"}, ("required", None, True)),
    ({"type": "none"}, ("none", None, True)),
    ({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}, ("function", "get_weather", False)),
])
def test_tool_choices_map_to_the_requests(choice, expected):
    request = parse(tools=[WEATHER], tool_choice=choice)
    assert (request.tool_choice, request.tool_name, request.parallel_tool_calls) == expected


@pytest.mark.parametrize("fields, param", [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),
    ({"top_k": 5}, "top_k"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({"mcp_servers": []}, "mcp_servers"),
    ({"container": "c"}, "container"),
    ({"output_config": {"format": {"type": "json_schema", "schema": "no"}}}, "output_config.format.schema"),
    ({"output_config": {"format": {"type": "text"}}}, "output_config.format"),
    ({"output_config": {"task_budget": 3}}, "output_config.task_budget"),
    ({"stop_sequences": "x"}, "stop_sequences"),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    ({"system": 3}, "system"),
    ({"system": [{"type": "image", "source": {}}]}, "system[0].type"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "system", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
                   {"role": "user", "content": "x"}]}, "messages[0].content[0].type"),
    ({"tools": [dict(WEATHER, eager_input_streaming=True)]}, "tools[0].eager_input_streaming"),
    ({"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}, "context_management"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"}}, "thinking"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hm", "signature": "s"}]}, {"role": "user", "content": "y"}]},
     "messages[1].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {}}]}]}]}, "messages[0].content[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "The answer is"}]},
     "messages[1]"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tools": [dict(WEATHER, input_schema=[])]}, "tools[0].input_schema"),
    ({"tools": [dict(WEATHER, name="has space")]}, "tools[0].name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "other"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"model": 7}, "model"),
])
def test_what_cannot_be_honoured_is_a_400_naming_the_field(fields, param):
    with pytest.raises(RequestError) as caught:
        parse(**fields)
    assert caught.value.status == 400 and caught.value.param == param
    assert param.split("[")[0].split(".")[0] in caught.value.message


def test_output_config_is_a_response_format_and_quiet_thinking_and_hints_are_accepted():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    request = parse(output_config={"effort": "low", "format": {"type": "json_schema", "schema": schema}},
                    thinking={"type": "adaptive"}, cache_control={"type": "ephemeral"}, speed="fast",
                    service_tier="auto", inference_geo="eu")
    assert request.response_format == {"type": "json_schema", "name": "output", "schema": schema, "strict": True}
    assert parse(output_config={"effort": "high"}).response_format is None


def test_a_request_as_claude_code_sends_it_is_read():
    # The shape of a real Claude Code 2.1 first turn (ANTHROPIC_BASE_URL at a recording server),
    # its long texts cut short.
    body = {
        "model": MODEL, "max_tokens": 32000, "stream": True,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>...</system-reminder>"},
                                         {"type": "text", "text": "Say hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment ...",
                                            "cache_control": {"type": "ephemeral"}}]}],
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
                   {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "# Doing tasks ...", "cache_control": {"type": "ephemeral"}}],
        "tools": [dict(WEATHER, name="Bash"), dict(WEATHER, name="Monitor", defer_loading=True)],
        "metadata": {"user_id": '{"device_id":"6de5","account_uuid":"","session_id":"0c37"}'},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }
    request = parse_messages_request(body)
    assert [message["role"] for message in request.messages] == ["system", "user", "system"]
    assert request.messages[1]["content"] == "<system-reminder>...</system-reminder>\nSay hi"
    assert [tool["name"] for tool in request.tools] == ["Bash", "Monitor"]
    assert request.stream and request.max_tokens == 32000 and request.response_format is None


def test_a_count_tokens_body_needs_no_max_tokens_and_asks_for_one_token():
    request = parse_messages_request({"model": MODEL, "messages": [{"role": "user", "content": "Hi."}],
                                      "tools": [WEATHER]}, counting=True)
    assert request.max_tokens == 1 and not request.stream and len(request.tools) == 1


def finish(reason="stop", calls=None):
    event = {"type": "finish", "finish_reason": reason, "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
    return event | ({"tool_calls": calls} if calls else {})


@pytest.mark.parametrize("reason, calls, stop", [("stop", None, "end_turn"), ("length", None, "max_tokens"),
                                                 ("tool_calls", [CALL], "tool_use")])
def test_whole_messages_read_by_the_sdk(reason, calls, stop):
    message = Message.model_validate(whole_message(TOKEN, MODEL, "Hi." if not calls else "", finish(reason, calls)))
    assert (message.id, message.type, message.role, message.model, message.stop_reason) == \
        (f"msg_{TOKEN}", "message", "assistant", MODEL, stop)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    if calls:
        [block] = message.content
        assert (block.type, block.id, block.name, block.input) == \
            ("tool_use", "toolu_call_7", "get_weather", {"city": "Oslo"})
    else:
        assert [(block.type, block.text) for block in message.content] == [("text", "Hi.")]


def streamed(deltas, last):
    events = MessageEvents(TOKEN, MODEL)
    pairs = events.opening() + [pair for text in deltas for pair in events.delta(text)] + last(events)
    for name, payload in pairs:
        if name not in ("ping", "error"):
            assert STREAM_EVENT.validate_python(payload).type == name
        assert payload["type"] == name
    return pairs


def test_a_streamed_text_answer_follows_anthropics_event_order():
    pairs = streamed(["Hel", "", "lo"], lambda events: events.finish(finish()))
    assert [name for name, _ in pairs] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                           "content_block_delta", "content_block_stop", "message_delta",
                                           "message_stop"]
    assert "".join(payload["delta"]["text"] for name, payload in pairs if name == "content_block_delta") == "Hello"
    assert pairs[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert pairs[-2][1]["usage"] == {"input_tokens": 11, "output_tokens": 3}


def test_streamed_tool_use_blocks_follow_the_text_whole():
    second = dict(CALL, id="call_8", arguments='{"city": "Bergen"}')
    pairs = streamed(["Checking."], lambda events: events.finish(finish("tool_calls", [CALL, second])))
    blocks = [(payload["index"], payload["content_block"]) for name, payload in pairs if name == "content_block_start"]
    assert blocks == [(0, {"type": "text", "text": ""}),
                      (1, {"type": "tool_use", "id": "toolu_call_7", "name": "get_weather", "input": {}}),
                      (2, {"type": "tool_use", "id": "toolu_call_8", "name": "get_weather", "input": {}})]
    json_deltas = [(payload["index"], payload["delta"]["partial_json"]) for name, payload in pairs
                   if name == "content_block_delta" and payload["delta"]["type"] == "input_json_delta"]
    assert json_deltas == [(1, '{"city": "Oslo"}'), (2, '{"city": "Bergen"}')]
    assert [payload["index"] for name, payload in pairs if name == "content_block_stop"] == [0, 1, 2]
    assert pairs[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_an_empty_answer_has_one_empty_text_block_and_a_failure_is_an_error_event():
    pairs = streamed([], lambda events: events.finish(finish()))
    assert [name for name, _ in pairs][2:4] == ["content_block_start", "content_block_stop"]
    failed = streamed(["a"], lambda events: events.failure(529, "the model is starting"))
    assert failed[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                               "message": "the model is starting"}})


def test_arguments_that_are_not_an_object_fail_before_anything_is_sent():
    events = MessageEvents(TOKEN, MODEL)
    with pytest.raises(ValueError):
        events.finish(finish("tool_calls", [dict(CALL, arguments="[1]")]))
    assert not events.text_open and events.blocks == 0


@pytest.mark.parametrize("status, kind", [
    (400, "invalid_request_error"), (401, "authentication_error"), (404, "not_found_error"),
    (413, "request_too_large"), (500, "api_error"), (503, "api_error"), (529, "overloaded_error")])
def test_errors_carry_anthropics_type_for_their_status(status, kind):
    assert error_body(status, "why") == {"type": "error", "error": {"type": kind, "message": "why"}}


# --- the access policy and x-api-key -----------------------------------------------------------

PORT, KEY = 9337, "sk-local-key"
KEYED = ApiAccess("t" * 43, api_key=KEY)
HOST, JSON = ("Host", f"127.0.0.1:{PORT}"), ("Content-Type", "application/json")


def outcome(method, path, headers, access=KEYED):
    decision = judge(method, path, headers, PORT, access)
    if decision.refusal is not None:
        return f"{decision.refusal.status} {decision.refusal.code}"
    return 204 if decision.preflight else 200


@pytest.mark.parametrize("method, path, headers, expected", [
    ("POST", "/v1/messages", [HOST, JSON, ("x-api-key", KEY)], 200),
    ("POST", "/v1/messages", [HOST, JSON, ("Authorization", f"Bearer {KEY}")], 200),
    ("POST", "/v1/messages", [HOST, JSON], "401 invalid_api_key"),
    ("POST", "/v1/messages", [HOST, JSON, ("x-api-key", "wrong")], "401 invalid_api_key"),
    ("POST", "/v1/messages", [HOST, JSON, ("x-api-key", KEY), ("X-Api-Key", "wrong")], "400 duplicate_header"),
    # a web page: it cannot send x-api-key without a preflight, and neither passes a foreign Origin
    ("POST", "/v1/messages", [HOST, JSON, ("x-api-key", KEY), ("Origin", "https://evil.example")],
     "403 origin_not_allowed"),
    ("OPTIONS", "/v1/messages", [HOST, ("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST"),
                                 ("Access-Control-Request-Headers", "x-api-key, content-type")],
     "403 origin_not_allowed"),
    ("POST", "/v1/responses", [HOST, ("Content-Type", "text/plain"), ("Origin", "https://evil.example")],
     "403 origin_not_allowed"),
    ("POST", "/v1/messages", [HOST, ("Content-Type", "text/plain"), ("x-api-key", KEY)],
     "415 unsupported_media_type"),
    # the key never opens management routes, which need the node's own secret
    ("GET", "/api/status", [HOST, ("x-api-key", KEY)], "401 invalid_api_token"),
    ("GET", "/api/status", [HOST, ("x-api-key", "t" * 43)], "401 invalid_api_token"),
])
def test_the_policy_reads_x_api_key_only_where_the_api_key_goes(method, path, headers, expected):
    assert outcome(method, path, headers) == expected
