import ast
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.core import openai_api
from meshdesk.core.openai_api import (
    SSE_DONE,
    GenerationRequest,
    RequestError,
    Usage,
    chat_chunk,
    chat_completion,
    completion,
    completion_chunk,
    error_body,
    models_list,
    parse_chat_request,
    parse_completion_request,
    parse_json_body,
    sse_event,
    usage_chunk,
)

USER_HI = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return {"model": "m", "messages": USER_HI} | fields


def comp(**fields):
    return {"model": "m", "prompt": "once upon"} | fields


# ---------------------------------------------------------------- valid requests


@pytest.mark.parametrize(
    "body, expected",
    [
        (chat(), dict(messages=({"role": "user", "content": "hi"},), max_tokens=None, temperature=0.8,
                      top_p=0.95, stop=(), seed=None, stream=False, include_usage=False)),
        (chat(max_tokens=5), dict(max_tokens=5)),
        (chat(max_completion_tokens=7, max_tokens=5), dict(max_tokens=7)),
        (chat(max_completion_tokens=None, max_tokens=5), dict(max_tokens=5)),
        (chat(max_tokens=1_000_000), dict(max_tokens=1_000_000)),
        (chat(temperature=0), dict(temperature=0.0)),
        (chat(temperature=2), dict(temperature=2.0)),
        (chat(temperature=None), dict(temperature=0.8)),
        (chat(top_p=1), dict(top_p=1.0)),
        (chat(top_p=0.001), dict(top_p=0.001)),
        (chat(stop="\n"), dict(stop=("\n",))),
        (chat(stop=["a", "b", "c", "d"]), dict(stop=("a", "b", "c", "d"))),
        (chat(stop=["", "x"]), dict(stop=("x",))),
        (chat(stop=None), dict(stop=())),
        (chat(seed=-1), dict(seed=-1)),
        (chat(seed=42), dict(seed=42)),
        (chat(stream=True), dict(stream=True, include_usage=False)),
        (chat(stream=True, stream_options={"include_usage": True}), dict(stream=True, include_usage=True)),
        (chat(stream=True, stream_options={}), dict(include_usage=False)),
        (chat(stream=False, stream_options=None), dict(stream=False)),
        (chat(n=1, user="x", tools=None, frequency_penalty=0), dict()),
        (chat(messages=[{"role": "system", "content": "be brief"}, {"role": "developer", "content": "d"},
                        {"role": "user", "content": "q"}, {"role": "assistant", "content": None},
                        {"role": "tool", "content": "42", "tool_call_id": "t1"}]),
         dict(messages=({"role": "system", "content": "be brief"}, {"role": "developer", "content": "d"},
                        {"role": "user", "content": "q"}, {"role": "assistant", "content": ""},
                        {"role": "tool", "content": "42", "tool_call_id": "t1"}))),
        (chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]),
         dict(messages=({"role": "user", "content": "a\nb"},))),
        (chat(messages=[{"role": "user", "content": ""}]), dict(messages=({"role": "user", "content": ""},))),
        (chat(messages=[{"role": "assistant"}]), dict(messages=({"role": "assistant", "content": ""},))),
    ],
)
def test_valid_chat_requests(body, expected):
    request = parse_chat_request(body)
    assert request.kind == "chat" and request.model == "m" and request.prompt == ""
    for field, value in expected.items():
        assert getattr(request, field) == value, field


@pytest.mark.parametrize(
    "body, expected",
    [
        (comp(), dict(prompt="once upon", messages=(), max_tokens=None, temperature=0.8, stream=False)),
        (comp(prompt=["only one"]), dict(prompt="only one")),
        (comp(prompt=""), dict(prompt="")),
        (comp(max_tokens=16, temperature=1.5, top_p=0.5, seed=3), dict(max_tokens=16, temperature=1.5, top_p=0.5, seed=3)),
        (comp(stream=True, stream_options={"include_usage": True}), dict(include_usage=True)),
        (comp(n=None, echo=False, logprobs=None), dict()),
    ],
)
def test_valid_completion_requests(body, expected):
    request = parse_completion_request(body)
    assert request.kind == "completion" and request.model == "m"
    for field, value in expected.items():
        assert getattr(request, field) == value, field


# ---------------------------------------------------------------- invalid requests

BOTH = ("chat", "completion")


def invalid(kind, body, param, message):
    return pytest.param(kind, body, param, message, id=f"{kind}-{param}-{message}")


INVALID_CASES = [
    # model
    *[invalid(k, {"messages": USER_HI, "prompt": "p"}, "model", "'model' is required") for k in BOTH],
    invalid("chat", chat(model=""), "model", "non-empty string"),
    invalid("completion", comp(model=3), "model", "got 3"),
    # messages
    invalid("chat", {"model": "m"}, "messages", "'messages' is required"),
    invalid("chat", chat(messages=[]), "messages", "non-empty list"),
    invalid("chat", chat(messages="hi"), "messages", "non-empty list"),
    invalid("chat", chat(messages=["hi"]), "messages[0]", "message object"),
    invalid("chat", chat(messages=[{"content": "x"}]), "messages[0].role", "must be one of"),
    invalid("chat", chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", '"robot"'),
    invalid("chat", chat(messages=[*USER_HI, {"role": "user", "content": None}]), "messages[1].content", "required"),
    invalid("chat", chat(messages=[{"role": "user"}]), "messages[0].content", "required for a user message"),
    invalid("chat", chat(messages=[{"role": "user", "content": 5}]), "messages[0].content", "string or a list"),
    invalid("chat", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]),
            "messages[0].content[0].type", "only text content is supported"),
    invalid("chat", chat(messages=[{"role": "user", "content": ["x"]}]), "messages[0].content[0]", "content part"),
    invalid("chat", chat(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
            "messages[0].content[0].text", "must be a string"),
    invalid("chat", chat(messages=[{"role": "user", "content": "\ud800"}]), "messages[0].content", "surrogate"),
    # prompt
    invalid("completion", {"model": "m"}, "prompt", "'prompt' is required"),
    invalid("completion", comp(prompt=None), "prompt", "'prompt' is required"),
    invalid("completion", comp(prompt=[1, 2, 3]), "prompt", "token ids is not supported"),
    invalid("completion", comp(prompt=["a", "b"]), "prompt", "only one prompt"),
    invalid("completion", comp(prompt=[]), "prompt", "exactly one string"),
    invalid("completion", comp(prompt=[[1, 2]]), "prompt", "exactly one string"),
    invalid("completion", comp(prompt={"text": "x"}), "prompt", "exactly one string"),
    # max_tokens
    invalid("chat", chat(max_tokens=-3), "max_tokens", "'max_tokens' must be a positive integer, got -3"),
    invalid("completion", comp(max_tokens=0), "max_tokens", "positive integer, got 0"),
    invalid("completion", comp(max_tokens=True), "max_tokens", "positive integer, got true"),
    invalid("completion", comp(max_tokens=2.5), "max_tokens", "positive integer, got 2.5"),
    invalid("completion", comp(max_tokens="10"), "max_tokens", 'got "10"'),
    invalid("chat", chat(max_tokens=1_000_001), "max_tokens", "at most 1000000"),
    invalid("chat", chat(max_completion_tokens=False), "max_completion_tokens", "positive integer, got false"),
    invalid("chat", chat(max_completion_tokens=5, max_tokens=-1), "max_tokens", "positive integer"),
    # temperature, top_p
    invalid("chat", chat(temperature=2.5), "temperature", "between 0 and 2, got 2.5"),
    invalid("completion", comp(temperature=-0.1), "temperature", "between 0 and 2"),
    invalid("chat", chat(temperature=True), "temperature", "must be a number, got true"),
    invalid("chat", chat(temperature="hot"), "temperature", "must be a number"),
    invalid("chat", chat(temperature=10**400), "temperature", "between 0 and 2"),
    invalid("chat", chat(top_p=0), "top_p", "greater than 0 and at most 1, got 0"),
    invalid("completion", comp(top_p=1.01), "top_p", "at most 1"),
    invalid("completion", comp(top_p=False), "top_p", "must be a number, got false"),
    # seed
    invalid("chat", chat(seed=1.5), "seed", "integer or null, got 1.5"),
    invalid("chat", chat(seed=True), "seed", "got true"),
    invalid("completion", comp(seed=2**64), "seed", "64-bit integer"),
    # stream, stream_options
    invalid("chat", chat(stream="yes"), "stream", "must be a boolean"),
    invalid("completion", comp(stream=1), "stream", "must be a boolean, got 1"),
    invalid("chat", chat(stream_options={"include_usage": True}), "stream_options", "only allowed when 'stream' is true"),
    invalid("completion", comp(stream=False, stream_options={}), "stream_options", "only allowed"),
    invalid("chat", chat(stream=True, stream_options=[]), "stream_options", "an object or null"),
    invalid("chat", chat(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage",
            "must be a boolean"),
    # stop
    invalid("chat", chat(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
    invalid("completion", comp(stop=5), "stop", "a string or a list of strings"),
    invalid("completion", comp(stop=["a", 1]), "stop", "a list of strings"),
    # n
    invalid("chat", chat(n=2), "n", "only n=1 is supported"),
    invalid("completion", comp(n=True), "n", "only n=1 is supported"),
]


@pytest.mark.parametrize("kind, body, param, message", INVALID_CASES)
def test_invalid_requests_are_400_with_param_and_message(kind, body, param, message):
    parse = parse_chat_request if kind == "chat" else parse_completion_request
    with pytest.raises(RequestError) as caught:
        parse(body)
    error = caught.value
    assert error.status == 400
    assert error.param == param
    assert message in error.message
    assert error.to_body() == {
        "error": {"message": error.message, "type": "invalid_request_error", "param": param, "code": None}
    }


@pytest.mark.parametrize("parse", [parse_chat_request, parse_completion_request])
@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_parsers_reject_a_body_that_is_not_an_object(parse, body):
    with pytest.raises(RequestError, match="must be a JSON object"):
        parse(body)


# ---------------------------------------------------------------- JSON bodies


def test_parse_json_body_accepts_an_object():
    assert parse_json_body('{"model": "é"}'.encode()) == {"model": "é"}


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": Infinity}', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got a list"),
        (b'"text"', "got a string"),
        (b"null", "got null"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_parse_json_body_rejects_bad_bodies(raw, message):
    with pytest.raises(RequestError) as caught:
        parse_json_body(raw)
    assert caught.value.status == 400 and message in caught.value.message


def test_error_body_shape():
    assert error_body("no such model", type="not_found_error", param="model", code="model_not_found") == {
        "error": {"message": "no such model", "type": "not_found_error", "param": "model", "code": "model_not_found"}
    }
    error = RequestError("gone", status=404, type="not_found_error", code="model_not_found")
    assert (error.status, str(error), error.to_body()["error"]["code"]) == (404, "gone", "model_not_found")


# ---------------------------------------------------------------- wire round trip


@pytest.mark.parametrize(
    "request_",
    [
        parse_chat_request(chat()),
        parse_chat_request(chat(messages=[{"role": "system", "content": "s"}, *USER_HI], max_tokens=9,
                                temperature=0, top_p=0.5, stop=["x", "y"], seed=7, stream=True,
                                stream_options={"include_usage": True})),
        parse_completion_request(comp()),
        parse_completion_request(comp(prompt=["p"], stop="\n", stream=True, seed=-1)),
    ],
)
def test_wire_round_trip(request_):
    wire = request_.to_wire()
    assert json.loads(json.dumps(wire)) == wire
    assert GenerationRequest.from_wire(json.loads(json.dumps(wire))) == request_


@pytest.mark.parametrize(
    "change, param",
    [
        ({"kind": "rerank"}, "kind"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"prompt": "also a prompt"}, "prompt"),
        ({"include_usage": "yes"}, "include_usage"),
        ({"include_usage": True, "stream": False}, "stream_options"),
    ],
)
def test_from_wire_validates_like_the_parsers(change, param):
    wire = parse_chat_request(chat()).to_wire() | change
    with pytest.raises(RequestError) as caught:
        GenerationRequest.from_wire(wire)
    assert caught.value.param == param


def test_from_wire_rejects_messages_on_a_completion():
    wire = parse_completion_request(comp()).to_wire() | {"messages": USER_HI}
    with pytest.raises(RequestError) as caught:
        GenerationRequest.from_wire(wire)
    assert caught.value.param == "messages"


# ---------------------------------------------------------------- response shapes

openai = pytest.importorskip("openai")
from openai.types import Completion, Model  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

USAGE = Usage(prompt_tokens=3, completion_tokens=4)


def test_usage_adds_total():
    assert USAGE.to_dict() == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chat_completion_shape():
    body = chat_completion("chatcmpl-1", 1700000000, "m", "hello", "stop", USAGE)
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == "hello" and parsed.usage.total_tokens == 7


@pytest.mark.parametrize(
    "fields, delta",
    [
        (dict(role="assistant"), {"role": "assistant"}),
        (dict(role="assistant", content=""), {"role": "assistant", "content": ""}),
        (dict(content="tok"), {"content": "tok"}),
        (dict(finish_reason="length"), {}),
    ],
)
def test_chat_chunk_shape(fields, delta):
    body = chat_chunk("chatcmpl-1", 5, "m", **fields)
    assert body["object"] == "chat.completion.chunk"
    assert body["choices"] == [
        {"index": 0, "delta": delta, "finish_reason": fields.get("finish_reason"), "logprobs": None}
    ]
    parsed = ChatCompletionChunk.model_validate(body)
    assert parsed.choices[0].delta.content == fields.get("content")
    assert parsed.choices[0].finish_reason == fields.get("finish_reason")


def test_completion_shape():
    body = completion("cmpl-1", 5, "m", " there", "length", USAGE)
    assert body["object"] == "text_completion"
    assert body["choices"] == [{"text": " there", "index": 0, "logprobs": None, "finish_reason": "length"}]
    parsed = Completion.model_validate(body)
    assert parsed.choices[0].text == " there" and parsed.usage.completion_tokens == 4


def test_completion_chunk_shape():
    final = completion_chunk("cmpl-1", 5, "m", text="", finish_reason="stop")
    assert Completion.model_validate(final).choices[0].finish_reason == "stop"
    # OpenAI streams finish_reason null mid-stream; the client builds chunks without validation.
    middle = completion_chunk("cmpl-1", 5, "m", text="tok")
    assert middle["choices"] == [{"text": "tok", "index": 0, "logprobs": None, "finish_reason": None}]
    assert Completion.construct(**middle).choices[0].text == "tok"


def test_usage_chunks():
    chat_request = parse_chat_request(chat(stream=True, stream_options={"include_usage": True}))
    body = usage_chunk(chat_request, "chatcmpl-1", 5, "m", USAGE)
    assert body["choices"] == [] and body["usage"]["total_tokens"] == 7
    assert ChatCompletionChunk.model_validate(body).usage.prompt_tokens == 3

    completion_request = parse_completion_request(comp(stream=True, stream_options={"include_usage": True}))
    body = usage_chunk(completion_request, "cmpl-1", 5, "m", USAGE)
    assert body["object"] == "text_completion" and body["choices"] == []
    assert Completion.model_validate(body).usage.total_tokens == 7


def test_unknown_finish_reason_is_a_programming_error():
    with pytest.raises(ValueError):
        chat_completion("id", 0, "m", "", "tired", USAGE)
    with pytest.raises(ValueError):
        completion_chunk("id", 0, "m", text="", finish_reason="tool_calls")


def test_models_list_shape():
    body = models_list(["a", "b"], 7)
    assert body == {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "created": 7, "owned_by": "meshdesk"},
            {"id": "b", "object": "model", "created": 7, "owned_by": "meshdesk"},
        ],
    }
    assert [Model.model_validate(entry).id for entry in body["data"]] == ["a", "b"]


def test_sse_framing():
    event = sse_event({"content": "é", "n": 1})
    assert event == 'data: {"content":"é","n":1}\n\n'.encode()
    assert sse_event({"text": "\ud800"}).startswith(b"data: ")
    assert SSE_DONE == b"data: [DONE]\n\n"


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
KNOWN_FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                "stop", "seed", "stream", "stream_options", "n", "role", "content", "type", "text", "include_usage"]
message_like = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "robot"]) | json_values,
        "content": st.text() | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text()})) | json_values,
    },
)
request_like = st.dictionaries(
    st.sampled_from(KNOWN_FIELDS) | st.text(max_size=8),
    json_values | st.lists(message_like, max_size=3) | st.dictionaries(st.sampled_from(KNOWN_FIELDS), json_values),
    max_size=10,
)
# Random overrides on top of a valid body reach the checks behind 'model' and 'messages'.
valid_body_with_overrides = st.builds(
    lambda base, overrides: base | overrides, st.sampled_from([chat(), comp(), chat() | comp()]), request_like
)


def parse_or_request_error(parse, value):
    try:
        request = parse(value)
    except RequestError as error:
        assert error.status == 400 and error.message
        json.dumps(error.to_body())
        return None
    assert isinstance(request, GenerationRequest)
    assert GenerationRequest.from_wire(json.loads(json.dumps(request.to_wire()))) == request
    return request


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_parse_json_body_only_raises_request_error(raw):
    try:
        body = parse_json_body(raw)
    except RequestError as error:
        assert error.status == 400
        return
    assert isinstance(body, dict)
    parse_or_request_error(parse_chat_request, body)
    parse_or_request_error(parse_completion_request, body)


@settings(max_examples=300, deadline=None)
@given(valid_body_with_overrides | request_like | json_values)
def test_parsers_only_raise_request_error(value):
    for parse in (parse_chat_request, parse_completion_request, GenerationRequest.from_wire):
        parse_or_request_error(parse, value)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {"model": st.text(min_size=1), "messages": st.lists(message_like, min_size=1, max_size=3)},
        optional={"max_tokens": st.integers(-2, 5) | st.none(), "temperature": st.floats(-1, 3),
                  "stop": st.lists(st.text(max_size=3), max_size=5), "stream": st.booleans()},
    )
)
def test_nearly_valid_chat_requests_parse_or_fail_cleanly(body):
    parse_or_request_error(parse_chat_request, body)


# ---------------------------------------------------------------- purity


def test_module_imports_only_the_standard_library():
    imported = set()
    for path in Path(openai_api.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, "relative imports would hide where a name comes from"
                imported.add(node.module)
    own = {name for name in imported if name.startswith("meshdesk.")}
    assert own and all(name.startswith("meshdesk.core.openai_api.") or name == "meshdesk.core.json_schema_support"
                       for name in own)
    imported = {name.split(".")[0] for name in imported - own}
    assert imported <= sys.stdlib_module_names
    assert not imported & {"asyncio", "socket", "time", "uuid", "random", "secrets", "datetime", "os"}
