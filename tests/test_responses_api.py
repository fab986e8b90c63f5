"""The Responses API, pure: bodies read into the generation request (with the 400 that names
each field it cannot honour), and answers shaped as the official SDK's types read them."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from meshdesk.core.openai_api import RequestError
from meshdesk.core.responses_api import ResponseEvents, output_text, parse_responses_request, whole_response

MODEL = "gemma-3-270m-q4_k_m"
TOKEN = "ab" * 12
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}
CALL = {"id": "call_7", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def parse(**fields):
    return parse_responses_request({"model": MODEL, "input": "Hi.", **fields})


def test_a_string_input_with_instructions_is_a_system_and_a_user_message():
    call = parse(instructions="Be brief.", max_output_tokens=7, temperature=0.2, top_p=0.5)
    assert call.request.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."})
    assert (call.request.max_tokens, call.request.temperature, call.request.top_p) == (7, 0.2, 0.5)
    assert call.request.kind == "chat" and not call.request.stream and call.request.tools == ()


def test_items_become_messages_tool_calls_and_tool_results():
    call = parse(input=[
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather"},
                                                        {"type": "input_text", "text": "in Oslo?"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_7", "name": "get_weather",
         "arguments": '{"city": "Oslo"}', "status": "completed"},
        {"type": "function_call", "call_id": "call_8", "name": "get_weather", "arguments": '{"city": "Bergen"}'},
        {"type": "function_call_output", "call_id": "call_7", "output": "Rain"},
        {"type": "function_call_output", "call_id": "call_8", "output": [{"type": "input_text", "text": "Sun"}]},
    ], tools=[WEATHER])
    assert call.request.messages == (
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather\nin Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_7", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
            {"id": "call_8", "name": "get_weather", "arguments": '{"city": "Bergen"}'}]},
        {"role": "tool", "content": "Rain", "tool_call_id": "call_7"},
        {"role": "tool", "content": "Sun", "tool_call_id": "call_8"},
    )


def test_flat_function_tools_choices_and_text_formats_reach_the_request():
    call = parse(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"},
                 parallel_tool_calls=False)
    assert call.request.tools == ({"name": "get_weather", "description": "The weather in a city.",
                                   "parameters": WEATHER["parameters"]},)
    assert (call.request.tool_choice, call.request.tool_name, call.request.parallel_tool_calls) == \
        ("function", "get_weather", False)
    assert parse(tools=[WEATHER], tool_choice="required").request.tool_choice == "required"
    assert parse(text={"format": {"type": "json_object"}}).request.response_format == {"type": "json_object"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    formatted = parse(text={"format": {"type": "json_schema", "name": "count", "schema": schema, "strict": True}})
    assert formatted.request.response_format == {"type": "json_schema", "name": "count", "schema": schema,
                                                 "strict": True}
    assert parse(text={"format": {"type": "text"}}).request.response_format is None


def test_fields_that_cannot_change_the_answer_are_accepted():
    call = parse(store=False, metadata={"a": "b"}, user="u", prompt_cache_key="k", truncation="disabled",
                 include=["reasoning.encrypted_content"], reasoning={"effort": "low"}, stream=True,
                 stream_options={"include_obfuscation": False}, top_logprobs=0)
    assert call.request.stream and call.echo["store"] is False and call.echo["metadata"] == {"a": "b"}


def test_a_request_as_codex_sends_it_is_read():
    # The fields of codex-rs's ResponsesApiRequest, as it sends them to a provider of its own.
    shell = {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": False,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                                             "workdir": {"type": "string"}},
                            "required": ["command"], "additionalProperties": False}}
    call = parse_responses_request({
        "model": MODEL, "instructions": "You are Codex.", "tools": [shell], "tool_choice": "auto",
        "parallel_tool_calls": False, "reasoning": None, "store": False, "stream": True, "include": [],
        "prompt_cache_key": "0199-thread", "client_metadata": {"x": "y"},
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List files."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Listing."}],
             "end_turn": False},
            {"type": "function_call", "name": "shell", "arguments": '{"command": ["ls"]}', "call_id": "call_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "README.md"},
        ]})
    assert [message["role"] for message in call.request.messages] == \
        ["system", "developer", "user", "assistant", "tool"]
    assert call.request.messages[3]["tool_calls"] == [{"id": "call_1", "name": "shell",
                                                      "arguments": '{"command": ["ls"]}'}]
    assert call.request.stream and not call.request.parallel_tool_calls and call.request.tools[0]["name"] == "shell"


@pytest.mark.parametrize("fields, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"seed": 3}, "seed"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"input": None}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"role": "user", "content": "x", "extra": 1}]}, "input[0].extra"),
    ({"instructions": ["x"]}, "instructions"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [dict(WEATHER, parameters=[])]}, "tools[0].parameters"),
    ({"tools": [dict(WEATHER, name="has space")]}, "tools[0].name"),
    ({"tools": [dict(WEATHER, defer_loading=True)]}, "tools[0].defer_loading"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "tools": []}}, "tool_choice"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"text": {"format": {"type": "json_schema", "name": "n", "schema": "no"}}}, "text.format.schema"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"model": ""}, "model"),
])
def test_what_cannot_be_honoured_is_a_400_naming_the_field(fields, param):
    with pytest.raises(RequestError) as caught:
        parse(**fields)
    assert caught.value.status == 400 and caught.value.param == param
    assert param.split("[")[0].split(".")[0] in caught.value.message


def finish(reason="stop", calls=None):
    event = {"type": "finish", "finish_reason": reason, "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
    return event | ({"tool_calls": calls} if calls else {})


def test_a_whole_text_answer_is_a_completed_response_the_sdk_reads():
    call = parse(instructions="Be brief.", tools=[WEATHER], metadata={"k": "v"})
    body = whole_response(call, TOKEN, 1700000000, "Hello.", finish())
    response = Response.model_validate(body)
    assert (response.id, response.object, response.status, response.output_text) == \
        (f"resp_{TOKEN}", "response", "completed", "Hello.")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (11, 3, 14)
    assert response.tools[0].name == "get_weather" and response.instructions == "Be brief."
    assert response.metadata == {"k": "v"} and response.model == MODEL


def test_tool_calls_are_function_call_items_and_length_is_incomplete():
    body = whole_response(parse(tools=[WEATHER]), TOKEN, 1, "", finish("tool_calls", [CALL]))
    assert [item["type"] for item in body["output"]] == ["function_call"]
    item = Response.model_validate(body).output[0]
    assert (item.call_id, item.name, json.loads(item.arguments), item.status) == \
        ("call_7", "get_weather", {"city": "Oslo"}, "completed")
    cut = Response.model_validate(whole_response(parse(), TOKEN, 1, "Hel", finish("length")))
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output[0].status == "incomplete" and cut.output_text == "Hel"


def streamed(call, deltas, last):
    events = ResponseEvents(call, TOKEN, 5)
    pairs = events.opening() + [pair for text in deltas for pair in events.delta(text)] + last(events)
    for name, payload in pairs:
        assert STREAM_EVENT.validate_python(payload).type == name
    assert [payload["sequence_number"] for _, payload in pairs] == list(range(len(pairs)))
    return pairs


def test_a_streamed_text_answer_follows_openais_event_order():
    call = parse(stream=True)
    pairs = streamed(call, ["Hel", "", "lo"], lambda events: events.finish(finish()))
    assert [name for name, _ in pairs] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert pairs[0][1]["response"]["status"] == "in_progress" and pairs[0][1]["response"]["output"] == []
    assert pairs[6][1]["text"] == "Hello"
    completed = pairs[-1][1]["response"]
    assert completed == whole_response(call, TOKEN, 5, "Hello", finish()) and output_text(completed) == "Hello"


def test_streamed_tool_calls_follow_the_text_whole():
    call = parse(tools=[WEATHER], stream=True)
    second = dict(CALL, id="call_8", arguments='{"city": "Bergen"}')
    pairs = streamed(call, ["Let me check."], lambda events: events.finish(finish("tool_calls", [CALL, second])))
    names = [name for name, _ in pairs]
    assert names[2:9] == ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
                          "response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.output_item.added"]
    assert names[9:] == ["response.function_call_arguments.delta", "response.function_call_arguments.done",
                         "response.output_item.done", "response.output_item.added",
                         "response.function_call_arguments.delta", "response.function_call_arguments.done",
                         "response.output_item.done", "response.completed"]
    deltas = [payload for name, payload in pairs if name == "response.function_call_arguments.delta"]
    assert [(delta["output_index"], delta["delta"]) for delta in deltas] == \
        [(1, CALL["arguments"]), (2, second["arguments"])]
    final = pairs[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call", "function_call"]
    assert final == whole_response(call, TOKEN, 5, "Let me check.", finish("tool_calls", [CALL, second]))


def test_an_empty_answer_still_has_its_message_and_a_cut_one_ends_incomplete():
    empty = streamed(parse(stream=True), [], lambda events: events.finish(finish()))
    assert [name for name, _ in empty][2:4] == ["response.output_item.added", "response.content_part.added"]
    cut = streamed(parse(stream=True), ["a"], lambda events: events.finish(finish("length")))
    assert cut[-1][0] == "response.incomplete"
    assert cut[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_answer_that_breaks_off_ends_failed_with_the_reason():
    pairs = streamed(parse(stream=True), ["Hel"], lambda events: events.failure("the model host was lost"))
    assert pairs[-1][0] == "response.failed"
    assert pairs[-1][1]["response"]["error"] == {"code": "server_error", "message": "the model host was lost"}
