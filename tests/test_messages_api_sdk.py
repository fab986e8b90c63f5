"""`POST /v1/messages` of a real node on the real bundled model, through the official anthropic
SDK: `client.messages.create` and `client.messages.stream`, text and tools (a forced tool use
validates against its schema, and its result goes back as a tool_result block), token counting,
and errors in Anthropic's shape that the SDK raises as its own exceptions.

A tiny model's answers are poor: what is asserted is the protocol."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4_k_m"
# This SDK has no temperature argument any more; Claude Code and older SDKs still send one.
GREEDY = {"extra_body": {"temperature": 0}}
WEATHER = {"name": "get_weather", "description": "The current weather in a city",
           "input_schema": {"type": "object", "required": ["city"], "additionalProperties": False,
                            "properties": {"city": {"type": "string", "maxLength": 30}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def client(shared_node):
    # The SDK appends /v1/messages itself; Claude Code does the same with ANTHROPIC_BASE_URL.
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{shared_node.port}", api_key="meshdesk",
                               max_retries=0, timeout=300)


def test_a_text_message(client):
    message = client.messages.create(model=MODEL, max_tokens=8, **GREEDY, messages=[
        {"role": "user", "content": "Name a colour."}],
        system=[{"type": "text", "text": "Answer in one word.", "cache_control": {"type": "ephemeral"}}],
        metadata={"user_id": "tester"})
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.stop_reason in ("end_turn", "max_tokens")
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 3 and 0 < message.usage.output_tokens <= 8


def test_running_out_of_tokens_is_max_tokens(client):
    message = client.messages.create(model=MODEL, max_tokens=2, **GREEDY,
                                     messages=[{"role": "user", "content": "Count: 1, 2, 3,"}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


def test_a_streamed_message_adds_up(client):
    with client.messages.stream(model=MODEL, max_tokens=12, **GREEDY,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.input_tokens > 3
    assert final.usage.output_tokens > 0


def test_raw_stream_events_arrive_in_anthropics_order(client):
    events = list(client.messages.create(model=MODEL, max_tokens=6, stream=True, **GREEDY,
                                         messages=[{"role": "user", "content": "Say hello."}]))
    types = [event.type for event in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}


def test_a_forced_tool_use_validates_and_its_result_goes_back(client):
    message = client.messages.create(model=MODEL, max_tokens=60, messages=ASK, tools=[WEATHER], **GREEDY,
                                     tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert uses
    for use in uses:
        assert use.name == "get_weather" and use.id.startswith("toolu_")
        jsonschema.validate(use.input, WEATHER["input_schema"])
    follow_up = client.messages.create(model=MODEL, max_tokens=16, tools=[WEATHER], **GREEDY, messages=[
        *ASK, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}
                                     for use in uses]}])
    assert follow_up.stop_reason in ("end_turn", "max_tokens", "tool_use") and follow_up.content


def test_a_streamed_tool_use_is_assembled_by_the_sdk(client):
    with client.messages.stream(model=MODEL, max_tokens=60, messages=ASK, tools=[WEATHER], **GREEDY,
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        final = stream.get_final_message()
    [use] = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use" and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER["input_schema"])


def test_an_output_format_schema_is_followed(client):
    schema = {"type": "object", "required": ["colour"], "additionalProperties": False,
              "properties": {"colour": {"type": "string", "maxLength": 20}}}
    message = client.messages.create(model=MODEL, max_tokens=40, **GREEDY, messages=[
        {"role": "user", "content": "Name a colour as JSON."}],
        output_config={"format": {"type": "json_schema", "schema": schema}})
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), schema)


def test_count_tokens_counts_what_the_model_reads(client):
    short = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hi."}])
    longer = client.messages.count_tokens(model=MODEL, messages=ASK, tools=[WEATHER])
    assert 0 < short.input_tokens < longer.input_tokens


def test_an_image_is_a_400_naming_it(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in caught.value.body["error"]["message"]


def test_a_missing_max_tokens_and_an_unknown_model(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages", cast_to=object, body={"model": MODEL, "messages": ASK})
    assert "max_tokens" in caught.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=ASK)
    assert caught.value.body["error"]["type"] == "not_found_error"
