"""The OpenAI Agents SDK (`openai-agents`) runs an agent with a function tool against a real node
through `/v1/responses`: its Runner sends the Responses API as it does to OpenAI, calls the tool
the model asked for, sends the output back as an input item, and ends with the final text, both
whole and streamed, on the instruct model (SmolLM2: it ends its answers, where the base Gemma
runs on to the token limit, which the SDK takes as a failed turn). A tiny model's answer is
poor: what is asserted is that the loop completes."""

from __future__ import annotations

import asyncio
import json

import pytest


agents = pytest.importorskip("agents", reason="the openai-agents test extra is not installed")

pytestmark = pytest.mark.slow

MODEL = "smollm2"
asked: list[str] = []


@agents.function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    asked.append(city)
    return f"Sunny and 21 C in {city}."


def weather_agent(node) -> agents.Agent:
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = AsyncOpenAI(base_url=node.base_url, api_key="meshdesk", max_retries=0, timeout=300)
    return agents.Agent(
        name="weather", instructions="Answer with the weather tool, then in one sentence.", tools=[get_weather],
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
        # required once, then the SDK sets tool_choice back to auto so the loop can end
        model_settings=agents.ModelSettings(tool_choice="required", temperature=0, max_tokens=120))


def assert_called_once_and_answered(result) -> None:
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds and "tool_call_output_item" in kinds
    call = next(item.raw_item for item in result.new_items if item.type == "tool_call_item")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    assert isinstance(result.final_output, str)


def test_an_agent_calls_its_tool_and_answers(smol_node):
    asked.clear()
    result = asyncio.run(agents.Runner.run(weather_agent(smol_node), "What is the weather in Paris?",
                                           max_turns=4))
    assert_called_once_and_answered(result)
    assert asked and len(result.raw_responses) >= 2


def test_a_streamed_agent_run_completes(smol_node):
    async def run():
        streamed = agents.Runner.run_streamed(weather_agent(smol_node), "What is the weather in Oslo?", max_turns=4)
        kinds = [event.type async for event in streamed.stream_events()]
        return streamed, kinds

    asked.clear()
    streamed, kinds = asyncio.run(run())
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert_called_once_and_answered(streamed)
