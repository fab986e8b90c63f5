"""The model host's tool and grammar pieces, on a real llama.cpp with the real SmolLM2 and its
real template: what the model is shown, and what a grammar lets it write."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import pytest

from meshdesk.adapters.llama import grammar, tool_prompt
from meshdesk.adapters.llama.chat_template import GEMMA_TEMPLATE, chat_format

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "required": ["city", "unit"],
                          "properties": {"city": {"type": "string", "maxLength": 30},
                                         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}
ADD = {"name": "add", "description": "Adds two integers",
       "parameters": {"type": "object", "required": ["a", "b"],
                      "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}
# A Qwen2.5-style template: it reads `tools`, and each call's arguments as an object.
TOOLS_TEMPLATE = (
    "{% if tools %}TOOLS:{% for tool in tools %}{{ tool.function.name }};{% endfor %}\n{% endif %}"
    "{% for message in messages %}{{ message.role }}:{{ message.content }}"
    "{% for call in message.tool_calls or [] %}[{{ call.function.name }} {{ call.function.arguments.city }}]"
    "{% endfor %}{% if message.name %}({{ message.name }}){% endif %}\n{% endfor %}")
HISTORY = (
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
)


def request(messages=({"role": "user", "content": "What is the weather in Paris?"},), tools=(WEATHER, ADD),
            tool_choice="required", tool_name=None, parallel=True, response_format=None):
    return SimpleNamespace(kind="chat", messages=tuple(messages), tools=tuple(tools), tool_choice=tool_choice,
                           tool_name=tool_name, parallel_tool_calls=parallel, response_format=response_format,
                           stop=(), continue_from=None)


@pytest.fixture(scope="module")
def smollm2(smollm2_model_path):
    import llama_cpp

    from meshdesk.adapters.llama.grammar_sampler import with_grammar_first

    return with_grammar_first(llama_cpp.Llama)(model_path=str(smollm2_model_path), n_ctx=2048, n_threads=2,
                                               verbose=False)


def generate(llama, chat_request, max_tokens=96) -> tuple[str, str]:
    chat = chat_format(llama)
    prompt = chat.render(chat_request).prompt
    tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
    out = llama.create_completion(prompt=tokens, max_tokens=max_tokens, temperature=0.0, stop=["<|im_end|>"],
                                  grammar=grammar.llama_grammar(llama, grammar.constraint_for(chat_request)))
    return out["choices"][0]["text"], out["choices"][0]["finish_reason"]


def calls_in(text: str) -> list[dict]:
    blocks = text.split(grammar.CALL_CLOSE)
    assert blocks[-1] == "", text
    return [json.loads(block.strip().removeprefix(grammar.CALL_OPEN.strip())) for block in blocks[:-1]]


def test_a_template_without_tools_gets_a_tool_system_prompt_and_calls_and_results_as_text(smollm2):
    chat = chat_format(smollm2)
    assert not chat.takes_tools and not tool_prompt.template_takes_tools(GEMMA_TEMPLATE.template)
    prompt = chat.render(request(HISTORY, tool_choice="auto")).prompt
    assert prompt.startswith("<|im_start|>system\n# Tools") and "You are a helpful AI" not in prompt
    assert '{"type": "function", "function": {"name": "get_weather"' in prompt
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
            '"unit": "celsius"}}\n</tool_call><|im_end|>') in prompt
    assert ("<|im_start|>user\n<tool_response>\n21 C\n</tool_response>\n<tool_response>\nsunny\n"
            "</tool_response><|im_end|>") in prompt  # one user turn for a run of results
    none = chat.render(request(HISTORY, tool_choice="none")).prompt
    assert "# Tools" not in none and "<tool_response>\n21 C" in none  # not shown, history still there


def test_a_template_that_takes_tools_gets_them_and_the_calls_in_openai_shape():
    assert tool_prompt.template_takes_tools(TOOLS_TEMPLATE)
    prepared = tool_prompt.chat_input(request(HISTORY, tool_choice="auto"), takes_tools=True)
    from jinja2 import Environment

    text = Environment().from_string(TOOLS_TEMPLATE).render(messages=prepared.messages, **prepared.extra)
    assert text.splitlines() == ["TOOLS:get_weather;add;", "user:Weather in Paris?", "assistant:[get_weather Paris]",
                                 "tool:21 C(get_weather)", "tool:sunny(get_weather)"]
    assert tool_prompt.chat_input(request(HISTORY, tool_choice="none"), takes_tools=True).extra == {}


@pytest.mark.parametrize("choice, name", [("required", None), ("function", "add")])
def test_a_required_or_named_call_is_valid_under_the_grammar(smollm2, choice, name):
    text, finish = generate(smollm2, request(tool_choice=choice, tool_name=name))
    calls = calls_in(text)
    assert finish == "stop" and 1 <= len(calls) <= grammar.MAX_PARALLEL_CALLS
    tools = {tool["name"]: tool for tool in (WEATHER, ADD)}
    for call in calls:
        assert set(call) == {"name", "arguments"} and (name is None or call["name"] == name)
        jsonschema.validate(call["arguments"], tools[call["name"]]["parameters"])


def test_without_parallel_calls_the_grammar_allows_one(smollm2):
    text = grammar.grammar_text(grammar.constraint_for(request(parallel=False)))
    assert "{0," not in text
    assert len(calls_in(generate(smollm2, request(parallel=False))[0])) == 1


def test_json_answers_follow_the_schema_and_auto_allows_a_call_or_the_answer(smollm2):
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
              "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}}}
    asked = [{"role": "user", "content": "Describe a person."}]
    as_schema = {"type": "json_schema", "name": "person", "schema": schema, "strict": True}
    text, finish = generate(smollm2, request(asked, tools=(), tool_choice="auto", response_format=as_schema))
    jsonschema.validate(json.loads(text), schema)
    asked_json = [{"role": "user", "content": "Give me a JSON object with the keys city and country for Paris."}]
    text, _ = generate(smollm2, request(asked_json, tools=(), tool_choice="auto",
                                        response_format={"type": "json_object"}))
    assert isinstance(json.loads(text), dict)
    both = grammar.grammar_text(grammar.constraint_for(request(asked, tool_choice="auto", response_format=as_schema)))
    assert "root ::= calls | answer" in both


def test_a_schema_or_grammar_llama_cpp_cannot_read_is_refused_not_a_crash(smollm2):
    remote = {"type": "object", "properties": {"x": {"$ref": "https://example.com/schema.json"}}}
    with pytest.raises(grammar.GrammarError):
        grammar.grammar_text(grammar.Constraint(answer_schema=remote))
    with pytest.raises(grammar.GrammarError):
        grammar.parsed_grammar(smollm2, 'root ::= "unterminated')
    assert grammar.constraint_for(request(tools=(), tool_choice="auto")) is None
    assert grammar.constraint_for(request(tool_choice="auto")) is None  # auto without a format: free


def test_two_tools_with_a_definition_of_the_same_name_keep_their_own(smollm2):
    def tool(name, item):
        return {"name": name, "description": "", "parameters": {
            "type": "object", "required": ["x"], "properties": {"x": {"$ref": "#/$defs/item"}},
            "$defs": {"item": item}}}

    tools = (tool("count", {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}),
             tool("flag", {"type": "object", "required": ["b"], "properties": {"b": {"type": "boolean"}}}))
    text = grammar.grammar_text(grammar.constraint_for(request(tools=tools)))
    assert 'tool0-item-n-kv ::= "\\"n\\"" space ":" space integer' in text
    assert 'tool1-item-b-kv ::= "\\"b\\"" space ":" space boolean' in text
    import llama_cpp

    llama_cpp.llama_sampler_free(grammar.parsed_grammar(smollm2, text))


def test_the_grammar_asked_first_about_the_chosen_token_gives_the_chain_s_answer(smollm2):
    """The host's sampler (grammar_sampler) against llama-cpp-python's grammar in the chain."""
    chat_request = request(parallel=False)
    smollm2.grammar_first = False
    try:
        smollm2.reset()  # a cached prefix changes the batch shapes, and so the logits' last bits
        chain_text = generate(smollm2, chat_request)
    finally:
        smollm2.grammar_first = True
    smollm2.reset()
    assert generate(smollm2, chat_request) == chain_text
    sampler = smollm2.last_sampler
    assert 0 < sampler.refusals < sampler.steps  # the grammar overruled the model, but not every step


def test_a_forced_call_cut_short_by_max_tokens_is_dropped_and_the_whole_ones_go():
    from meshdesk.adapters.llama.tool_output import output_for

    text = ('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
            '<tool_call>\n{"name": "add", "argu')
    for choice, tail in (("required", ""), ("auto", text[text.index("\n<tool_call>"):])):
        output = output_for(request(tool_choice=choice))
        streamed = "".join(output.feed(text[at:at + 5]) for at in range(0, len(text), 5))
        left, calls = output.finish()
        assert (streamed, left.lstrip("\n"), len(calls)) == ("", tail.lstrip("\n"), 1), choice
        assert calls[0]["id"].startswith("call_") and json.loads(calls[0]["arguments"]) == {"a": 1, "b": 2}


def test_a_grammar_longer_than_the_cap_is_refused_before_llama_cpp_parses_it():
    properties = {f"p{index}": {"const": "x" * 2000} for index in range(600)}
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    with pytest.raises(grammar.GrammarError, match="characters"):
        grammar.grammar_text(grammar.Constraint(answer_schema=schema))
