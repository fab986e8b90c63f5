"""Tool calls and stop sequences in the agents' APIs over real HTTP, in front of a scripted gateway:
chat's checks on a host's calls hold for Anthropic and Responses answers too (ids supplied, one
call when the client asked for no parallel calls, a malformed call a server error or the
stream's error event, never a dropped connection), and a stop sequence is Anthropic's own reason."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.test_messages_api_routes import ASK, api, claude, gateway, responses  # noqa: F401 (fixtures)

USAGE = {"prompt_tokens": 9, "completion_tokens": 2}
TWO_CALLS = [{"type": "delta", "text": "Let me look."},
             {"type": "finish", "finish_reason": "tool_calls", "usage": USAGE,
              "tool_calls": [{"name": "search", "arguments": '{"q":"a"}'},  # no id: one is supplied
                             {"id": "call_b", "name": "search", "arguments": '{"q":"b"}'}]}]
NAMELESS = [{"type": "delta", "text": "Hel"},
            {"type": "finish", "finish_reason": "tool_calls", "usage": USAGE, "tool_calls": [{"arguments": "{}"}]}]
TOOL = {"name": "search", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
FUNCTION = {"type": "function", "name": "search", "parameters": TOOL["input_schema"]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("parallel", [True, False])
def test_anthropic_calls_get_ids_and_parallel_use_can_be_disabled(gateway, claude, stream, parallel):
    gateway.events = TWO_CALLS
    choice = {"type": "auto", "disable_parallel_tool_use": not parallel}
    if stream:
        with claude.messages.stream(model="m", max_tokens=5, messages=ASK, tools=[TOOL], tool_choice=choice) as s:
            reply = s.get_final_message()
    else:
        reply = claude.messages.create(model="m", max_tokens=5, messages=ASK, tools=[TOOL], tool_choice=choice)
    uses = [block for block in reply.content if block.type == "tool_use"]
    assert [use.input for use in uses] == ([{"q": "a"}, {"q": "b"}] if parallel else [{"q": "a"}])
    assert uses[0].id.startswith("toolu_call_") and len(uses[0].id) > len("toolu_call_")
    assert reply.stop_reason == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("parallel", [True, False])
def test_responses_calls_get_ids_and_parallel_calls_can_be_disabled(gateway, responses, stream, parallel):
    gateway.events = TWO_CALLS
    fields = dict(model="m", input="Hi.", tools=[FUNCTION], parallel_tool_calls=parallel)
    if stream:
        with responses.stream(**fields) as s:
            reply = s.get_final_response()
    else:
        reply = responses.create(**fields)
    calls = [item for item in reply.output if item.type == "function_call"]
    assert [call.arguments for call in calls] == (['{"q":"a"}', '{"q":"b"}'] if parallel else ['{"q":"a"}'])
    assert calls[0].call_id.startswith("call_") and len(calls[0].call_id) > len("call_")


def test_a_malformed_call_ends_anthropics_stream_with_an_error_event(gateway, claude):
    gateway.events = NAMELESS
    with pytest.raises(anthropic.APIStatusError) as caught:
        with claude.messages.stream(model="m", max_tokens=5, messages=ASK, tools=[TOOL]) as stream:
            list(stream.text_stream)
    assert "malformed tool call" in str(caught.value) and caught.value.body["error"]["type"] == "api_error"
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model="m", max_tokens=5, messages=ASK, tools=[TOOL])


def test_a_malformed_call_ends_a_responses_stream_failed(gateway, responses):
    gateway.events = NAMELESS
    with responses.stream(model="m", input="Hi.", tools=[FUNCTION]) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.failed"
    with pytest.raises(openai.InternalServerError):
        responses.create(model="m", input="Hi.", tools=[FUNCTION])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("finish, reason, sequence", [
    ({"finish_reason": "stop", "stop_sequence": "END"}, "stop_sequence", "END"),
    ({"finish_reason": "stop"}, "end_turn", None),  # a host that does not say which stop matched
    ({"finish_reason": "length", "stop_sequence": "END"}, "max_tokens", None),
    ({"finish_reason": "stop", "stop_sequence": 7}, "end_turn", None),
])
def test_a_stop_sequence_is_anthropics_stop_reason_with_the_sequence(gateway, claude, stream, finish, reason,
                                                                      sequence):
    gateway.events = [{"type": "delta", "text": "one two "}, {"type": "finish", "usage": USAGE, **finish}]
    fields = dict(model="m", max_tokens=5, messages=ASK, stop_sequences=["END"])
    if stream:
        with claude.messages.stream(**fields) as s:
            reply = s.get_final_message()
    else:
        reply = claude.messages.create(**fields)
    assert (reply.stop_reason, reply.stop_sequence) == (reason, sequence)
    assert reply.content[0].text == "one two "
