"""`POST /v1/responses` of a real node on the real bundled model, through the official openai
SDK's `client.responses`: text, the streamed events the SDK iterates and accumulates, function
tools (a forced call validates against its schema, and its output goes back as an input item),
and the 400s a client gets for what this node cannot honour.

A tiny model's answers are poor: what is asserted is the protocol."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city",
           "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                          "properties": {"city": {"type": "string", "maxLength": 30}}},
           "strict": True}
ASK = "What is the weather in Paris?"


def test_a_text_response(shared_node):
    response = shared_node.client().responses.create(model=MODEL, instructions="Answer in one word.",
                                                     input="Name a colour.", max_output_tokens=8, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.output_text
    [message] = response.output
    assert (message.type, message.role, message.content[0].type) == ("message", "assistant", "output_text")
    assert response.usage.input_tokens > 3 and 0 < response.usage.output_tokens <= 8
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.instructions == "Answer in one word." and response.max_output_tokens == 8


def test_running_out_of_tokens_is_incomplete(shared_node):
    response = shared_node.client().responses.create(
        model=MODEL, input=[{"role": "user", "content": [{"type": "input_text", "text": "Count: 1, 2, 3,"}]}],
        max_output_tokens=2, temperature=0)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 2


def test_streamed_events_arrive_in_order_and_add_up(shared_node):
    stream = shared_node.client().responses.create(model=MODEL, input="Say hello.", max_output_tokens=12,
                                                   temperature=0, stream=True)
    events = list(stream)
    types = [event.type for event in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          events[-1].type]
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text and events[-1].response.output_text == text
    assert events[-1].response.usage.output_tokens > 0


def test_the_sdks_stream_helper_reads_the_same_events(shared_node):
    # The helper's get_final_response() wants response.completed; an answer cut by
    # max_output_tokens ends with response.incomplete, as OpenAI's does (the forced call below
    # completes, and reads its final response).
    with shared_node.client().responses.stream(model=MODEL, input="Say hello.", max_output_tokens=12,
                                               temperature=0) as stream:
        events = list(stream)
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert events[-1].response.output_text == "".join(deltas) and events[-1].response.id.startswith("resp_")


def test_a_forced_function_call_validates_and_its_output_goes_back(shared_node):
    client = shared_node.client()
    response = client.responses.create(model=MODEL, input=ASK, tools=[WEATHER], tool_choice="required",
                                       temperature=0, max_output_tokens=60)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and response.status == "completed"
    for call in calls:
        assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
        jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    follow_up = client.responses.create(
        model=MODEL, tools=[WEATHER], temperature=0, max_output_tokens=16,
        input=[{"role": "user", "content": ASK}, *[call.model_dump(exclude_none=True) for call in calls],
               *[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
                 for call in calls]])
    assert follow_up.status in ("completed", "incomplete") and follow_up.output


def test_a_streamed_function_call_with_a_named_tool(shared_node):
    with shared_node.client().responses.stream(model=MODEL, input=ASK, tools=[WEATHER], temperature=0,
                                               tool_choice={"type": "function", "name": "get_weather"},
                                               max_output_tokens=60) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    [call] = [item for item in final.output if item.type == "function_call"]
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_json_schema_text_format_parses(shared_node):
    schema = {"type": "object", "required": ["colour"], "additionalProperties": False,
              "properties": {"colour": {"type": "string", "maxLength": 20}}}
    response = shared_node.client().responses.create(
        model=MODEL, input="Name a colour as JSON.", temperature=0, max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "colour", "schema": schema, "strict": True}})
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)


@pytest.mark.parametrize("fields, param", [
    ({"previous_response_id": "resp_abc"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "input[0].content[0].type"),
])
def test_what_cannot_be_honoured_is_a_400_naming_it(shared_node, fields, param):
    arguments = {"model": MODEL, "input": "Hi.", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        shared_node.client().responses.create(**arguments)
    assert caught.value.body["param"] == param and param.split("[")[0] in caught.value.body["message"]


def test_an_unknown_model_is_404(shared_node):
    with pytest.raises(openai.NotFoundError):
        shared_node.client().responses.create(model="no-such-model", input="Hi.")
