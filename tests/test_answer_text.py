"""`AnswerText`: an answer's streamed text, stops, UTF-8 and finish, token by token.

First on a vocabulary of single bytes (so any split of a text into tokens can be tried), then
on the real bundled models: the tokens llama-cpp-python's `create_completion` sampled, fed to
`AnswerText`, must give what the one-at-a-time host sent for them (`reference_answer`).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from meshdesk.adapters.llama.answer_text import AnswerText, Vocabulary

EOS, BOS, MARKER, HELLO, AB = 256, 257, 258, 259, 260
SPECIAL_TEXT = {EOS: b"</s>", BOS: b"<s>", MARKER: b"<tool_call>"}
WORD_TEXT = {HELLO: b" hello", AB: b"ab"}
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}


def byte_piece(token: int, special: bool) -> bytes:
    if token in SPECIAL_TEXT:
        return SPECIAL_TEXT[token] if special else b""
    return WORD_TEXT.get(token, bytes([token]) if token < 256 else b"")


BYTES = Vocabulary(size=270, piece=byte_piece, ends=lambda token: token == EOS,
                   count=lambda text: len(text.encode("utf-8")), begin=BOS, markers=frozenset({MARKER}))


def tokens_of(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def byte_answer(stop=(), client_stop=(), continue_from=None, tools=(), prompt_tokens=7) -> AnswerText:
    prompt = SimpleNamespace(stop=[*client_stop, *stop], counted=lambda: prompt_tokens)
    request = SimpleNamespace(stop=tuple(client_stop), continue_from=continue_from, tools=tuple(tools),
                              tool_choice="auto")
    return AnswerText(None, prompt, request, vocabulary=BYTES)


def run(answer: AnswerText, tokens, finish_reason="length") -> tuple[list[str], str, dict]:
    """(each add's delta, the close's tail, the finish): closed "length" unless an add ended it."""
    deltas, ended = [], False
    for token in tokens:
        delta, ended = answer.add(token)
        deltas.append(delta)
        if ended:
            break
    tail, finish = answer.close(None if ended else finish_reason)
    return deltas, tail, finish


def test_text_streams_as_it_comes_and_the_finish_counts_prompt_and_answer():
    deltas, tail, finish = run(byte_answer(), [*tokens_of("Hi"), HELLO, EOS])
    assert deltas == ["H", "i", " hello", ""] and tail == ""
    assert finish == {"finish_reason": "stop", "usage": {"prompt_tokens": 7, "completion_tokens": 8}}


def test_a_character_split_across_tokens_streams_when_whole_even_just_before_the_end():
    # llama-cpp-python decoded the held-back end token by token and lost such a character.
    deltas, tail, finish = run(byte_answer(), [*tokens_of("a😀"), EOS])
    assert deltas == ["a", "", "", "", "😀", ""] and finish["finish_reason"] == "stop"
    assert finish["usage"]["completion_tokens"] == 5


def test_bytes_that_cannot_make_a_character_are_dropped_and_the_rest_streams():
    deltas, tail, _ = run(byte_answer(), [0x80, *tokens_of("ok"), 0xE6, *tokens_of("!")])
    assert "".join(deltas) + tail == "ok!"


def test_an_unfinished_character_at_the_budget_is_dropped_and_the_answer_is_length():
    deltas, tail, finish = run(byte_answer(), tokens_of("日本")[:5])
    assert "".join(deltas) + tail == "日" and finish["finish_reason"] == "length"


def test_a_stop_spanning_tokens_cuts_the_answer_and_is_named_when_it_is_the_clients():
    deltas, tail, finish = run(byte_answer(client_stop=["END"]), tokens_of("one ENDtwo"))
    assert deltas == ["o", "n", "e", " ", "", "", ""] and tail == ""
    assert finish["finish_reason"] == "stop" and finish["stop_sequence"] == "END"
    assert finish["usage"]["completion_tokens"] == 4


def test_a_template_stop_ends_the_answer_but_is_not_named():
    _, _, finish = run(byte_answer(client_stop=["x"], stop=["<|im_end|>"]), tokens_of("a<|im_end|>"))
    assert finish["finish_reason"] == "stop" and "stop_sequence" not in finish


def test_text_that_may_start_a_stop_waits_and_streams_once_it_cannot():
    deltas, tail, finish = run(byte_answer(client_stop=["abc"]), [*tokens_of("xab"), *tokens_of("ad")])
    assert deltas == ["x", "", "", "ab", "ad"] and tail == ""  # "aba": the second "a" may start one
    assert finish["finish_reason"] == "length" and "stop_sequence" not in finish


def test_a_held_start_of_a_stop_is_sent_when_the_budget_ends_the_answer():
    deltas, tail, finish = run(byte_answer(client_stop=["abc"]), [*tokens_of("x"), AB])
    assert deltas == ["x", ""] and tail == "ab" and finish["finish_reason"] == "length"


def test_a_stop_at_the_very_start_leaves_an_empty_answer():
    deltas, tail, finish = run(byte_answer(client_stop=["Hi"]), tokens_of("Hi there"))
    assert "".join(deltas) + tail == "" and finish["stop_sequence"] == "Hi"
    assert finish["usage"]["completion_tokens"] == 0


def test_a_stop_made_of_multibyte_characters_holds_their_bytes_and_cuts_before_them():
    deltas, tail, finish = run(byte_answer(client_stop=["日本"]), tokens_of("東京日本"))
    assert "".join(deltas) == "東京" and finish["stop_sequence"] == "日本"


def test_one_token_completing_two_stops_cuts_at_the_first_to_begin_and_names_the_first_listed():
    # As llama-cpp-python: it cut at the earliest match and the host named the first in list order.
    deltas, tail, finish = run(byte_answer(client_stop=["zab", "ab"]), [*tokens_of("xz"), AB])
    assert "".join(deltas) + tail == "x" and finish["stop_sequence"] == "zab"


def test_an_empty_stop_string_is_ignored_rather_than_ending_every_answer():
    _, tail, finish = run(byte_answer(stop=[""]), tokens_of("fine"))
    assert tail == "" and finish["finish_reason"] == "length" and finish["usage"]["completion_tokens"] == 4


def test_end_of_generation_is_not_rendered_and_a_stop_is_checked_before_the_budget():
    answer = byte_answer(client_stop=["!"])
    assert answer.add(tokens_of("a")[0]) == ("a", False)
    assert answer.add(tokens_of("!")[0]) == ("", True)
    tail, finish = answer.close("length")  # the caller's budget ran out on the same token
    assert tail == "" and finish["finish_reason"] == "stop" and finish["stop_sequence"] == "!"


def test_the_space_after_a_leading_bos_is_dropped_as_llama_cpp_does():
    deltas, _, _ = run(byte_answer(), [BOS, HELLO, HELLO])
    assert deltas == ["", "hello", " hello"]


def test_an_answer_carried_on_counts_its_earlier_text_as_completion():
    _, _, finish = run(byte_answer(continue_from="Once upon"), tokens_of(" a"))
    assert finish["usage"] == {"prompt_tokens": 7, "completion_tokens": len("Once upon a")}
    _, _, nothing = run(byte_answer(continue_from="Done."), [])  # a budget of 0 at the start
    assert nothing == {"finish_reason": "length", "usage": {"prompt_tokens": 7, "completion_tokens": 5}}


def test_with_tools_a_marker_token_renders_as_text_and_the_call_goes_in_the_finish():
    call = '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    deltas, tail, finish = run(byte_answer(tools=[WEATHER]), [MARKER, *tokens_of(call), EOS])
    assert "".join(deltas) + tail == ""
    assert finish["finish_reason"] == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in finish["tool_calls"]] == [("get_weather", '{"city":"Paris"}')]
    plain, _, no_call = run(byte_answer(), [MARKER, *tokens_of("ok")])
    assert "".join(plain) == "ok" and "tool_calls" not in no_call  # without tools it renders as nothing


def test_prose_streams_before_a_call_and_calls_count_in_usage():
    text = 'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    deltas, tail, finish = run(byte_answer(tools=[WEATHER]), tokens_of(text))
    assert "".join(deltas) + tail == "Sure." and finish["finish_reason"] == "tool_calls"
    assert finish["usage"]["completion_tokens"] == len(text)


@pytest.mark.parametrize("token", [-1, 270, 10**12, 2.0, "5", None, True])
def test_a_token_that_is_not_in_the_vocabulary_is_a_clear_value_error(token):
    answer = byte_answer()
    with pytest.raises(ValueError, match="token"):
        answer.add(token)
    assert answer.add(tokens_of("a")[0]) == ("a", False)  # the answer is unharmed


def test_misuse_after_the_end_is_a_clear_value_error():
    answer = byte_answer()
    assert answer.add(EOS) == ("", True)
    with pytest.raises(ValueError, match="ended"):
        answer.add(tokens_of("a")[0])
    with pytest.raises(ValueError, match="finish_reason"):
        answer.close("tool_calls")
    answer.close()
    with pytest.raises(ValueError, match="closed"):
        answer.close()


def expected_text(text: str, stops: list[str], cuts: list[int]) -> tuple[str, str | None]:
    """The answer llama-cpp-python gave when `text` arrived in tokens ending at `cuts` (bytes):
    cut at the first token whose text so far holds a stop, before the first stop to begin."""
    data = text.encode("utf-8")
    for end in cuts:
        found = [stop for stop in stops if stop.encode() in data[:end]]
        if found:
            cut = min(data[:end].index(stop.encode()) for stop in found)
            return data[:cut].decode("utf-8", errors="ignore"), found[0]
    return text, None


def test_any_split_of_a_text_into_tokens_streams_the_same_answer():
    pieces = ["a", "b", "é", "日", "😀", " ", "\n", "st", "op", "<|", "|>"]
    rng = random.Random(16)
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        stops = rng.sample(["stop", "b\n", "😀😀", "é日", "<||>", "ab"], rng.randint(0, 3))
        data, cuts, position = text.encode("utf-8"), [], 0
        while position < len(data):
            position = min(len(data), position + rng.randint(1, 4))
            cuts.append(position)
        vocabulary = Vocabulary(size=len(cuts) + 1, piece=lambda token, _, d=data, c=[0, *cuts]: d[c[token]:c[token + 1]],
                                ends=lambda token: False, count=lambda text: len(text))
        prompt = SimpleNamespace(stop=stops, counted=lambda: 0)
        request = SimpleNamespace(stop=tuple(stops), continue_from=None, tools=(), tool_choice="auto")
        deltas, tail, finish = run(AnswerText(None, prompt, request, vocabulary), range(len(cuts)))
        want, stop = expected_text(text, stops, cuts)
        assert ("".join(deltas) + tail, finish.get("stop_sequence")) == (want, stop), (text, stops, cuts)
        assert finish["usage"]["completion_tokens"] == len(want)


# The real models: what the one-at-a-time host sent for an answer, against AnswerText fed the
# same tokens. `reference_answer` is that host's way, kept here as it was (host.py's
# serve_generation, text_chunks, matched_stop and completion_token_count before issue 16).

def recording_model(path):
    """A `Llama` as the host loaded one, that also records every token it samples."""
    import llama_cpp

    from meshdesk.adapters.llama.grammar_sampler import with_grammar_first

    class Recording(with_grammar_first(llama_cpp.Llama)):
        sampled: list = []

        def sample(self, *args, **kwargs) -> int:
            token = super().sample(*args, **kwargs)
            self.sampled.append(token)
            return token

    return Recording(model_path=str(path), n_ctx=1024, n_threads=2, verbose=False)


@pytest.fixture(scope="module")
def smollm2(smollm2_model_path):
    return recording_model(smollm2_model_path)


@pytest.fixture(scope="module")
def gemma(default_model_path):
    return recording_model(default_model_path)


def request_for(body: dict):
    from meshdesk.core.openai_api.request import parse_chat_request, parse_completion_request

    body = {"model": "m", "temperature": 0.0, "stream": True} | body
    return parse_chat_request(body) if "messages" in body else parse_completion_request(body)


def prompt_of(llama, request):
    from meshdesk.adapters.llama import host
    from meshdesk.adapters.llama.chat_template import chat_format

    return host.prompt_for_request(llama, chat_format(llama), request)


def budget_of(llama, prompt, request) -> int:
    from meshdesk.core import continuation

    return continuation.token_budget(request.max_tokens, llama.n_ctx() - len(prompt.tokens), prompt.tokens_so_far)


def reference_answer(llama, request) -> tuple[str, dict, list[int]]:
    """(the text streamed, the finish, the tokens sampled) as llama-cpp-python and the host gave."""
    from meshdesk.adapters.llama.tool_output import PlainOutput, marker_tokens, output_for

    prompt, output = prompt_of(llama, request), output_for(request)
    llama.kept_tokens = frozenset() if isinstance(output, PlainOutput) else marker_tokens(llama)
    llama.reset()  # a cached prompt prefix changes the logits' last bits: each answer starts afresh
    llama.sampled = []
    streamed, sent, finish_reason = [], [], None
    try:
        for chunk in llama.create_completion(prompt=prompt.tokens, max_tokens=budget_of(llama, prompt, request),
                                             temperature=0.0, stop=prompt.stop, grammar=prompt.grammar, stream=True):
            text = chunk["choices"][0]["text"] or ""
            if text:
                streamed.append(text)
                sent.append(output.feed(text))
            finish_reason = chunk["choices"][0]["finish_reason"] or finish_reason
    finally:
        llama.kept_tokens = frozenset()
    tail, calls = output.finish()
    answered = (request.continue_from or "") + "".join(streamed)
    counted = len(llama.tokenize(answered.encode(), add_bos=False, special=True)) if answered else 0
    finish = {"finish_reason": finish_reason, "usage": {"prompt_tokens": prompt.counted(), "completion_tokens": counted}}
    client = list(request.stop) if prompt.stop[:len(request.stop)] == list(request.stop) else []
    rendered = llama.detokenize(llama.sampled).decode("utf-8", errors="ignore")
    found = [stop for stop in prompt.stop if stop in rendered]
    if finish_reason == "stop" and found and found[0] in client:
        finish["stop_sequence"] = found[0]
    if calls:
        finish |= {"finish_reason": "tool_calls", "tool_calls": calls}
    return "".join(sent) + tail, finish, list(llama.sampled)


def replayed_answer(llama, request, tokens: list[int]) -> tuple[str, dict]:
    """What AnswerText makes of `tokens`, fed as a batched host feeds them, up to the budget."""
    prompt = prompt_of(llama, request)
    answer = AnswerText(llama, prompt, request)
    streamed, ended = [], False
    for token in tokens[:budget_of(llama, prompt, request)]:
        delta, ended = answer.add(token)
        streamed.append(delta)
        if ended:
            break
    tail, finish = answer.close(None if ended else "length")
    return "".join(streamed) + tail, finish


def without_call_ids(finish: dict) -> dict:
    calls = [{key: value for key, value in call.items() if key != "id"} for call in finish.get("tool_calls", ())]
    return finish | ({"tool_calls": calls} if calls else {})


def assert_same_answer(llama, body: dict) -> tuple[str, dict, list[int]]:
    """The reference answer for `body`, after checking AnswerText gives the same from its tokens."""
    request = request_for(body)
    text, finish, tokens = reference_answer(llama, request)
    replayed_text, replayed_finish = replayed_answer(llama, request, tokens)
    assert (replayed_text, without_call_ids(replayed_finish)) == (text, without_call_ids(finish))
    return text, finish, tokens


def chat(content: str, **fields) -> dict:
    return {"messages": [{"role": "user", "content": content}]} | fields


TOOLS = [{"type": "function", "function": WEATHER}]
SAME_ON_SMOLLM2 = {
    "an answer ended by end-of-generation": chat("Say hi.", max_tokens=60),
    "an answer ended by max_tokens": chat("Write one sentence about the sea.", max_tokens=12),
    "emoji split across tokens": {"prompt": "Emoji: 😀😃😄😁😆🎉", "max_tokens": 24},
    "CJK split across tokens": {"prompt": "東京は日本の首都です。大阪は", "max_tokens": 24},
    "a stop made of CJK": {"prompt": "東京は日本の首都です。大阪は", "max_tokens": 24, "stop": ["の首"]},
    "tools offered, prose written": chat("Call get_weather for Oslo.", max_tokens=40, tools=TOOLS),
    "a required call (Hermes <tool_call>, under a grammar)": chat(
        "What is the weather in Paris?", max_tokens=80, tools=TOOLS, tool_choice="required"),
    "a named call, stop ignored under the grammar": chat(
        "Weather in Rome?", max_tokens=80, tools=TOOLS, stop=["Rome"],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}),
}


@pytest.mark.parametrize("body", SAME_ON_SMOLLM2.values(), ids=SAME_ON_SMOLLM2.keys())
def test_the_tokens_create_completion_sampled_give_the_answer_the_host_sent(smollm2, body):
    text, finish, tokens = assert_same_answer(smollm2, body)
    if "tool_choice" in body:
        assert finish["finish_reason"] == "tool_calls" and text == "" and "stop_sequence" not in finish
    if "😀" in body.get("prompt", "") or "東京" in body.get("prompt", ""):
        # The case is the one named: some character's bytes came in more than one token.
        assert any(not piece_is_utf8(smollm2, token) for token in tokens)
    if "stop" in body and "tool_choice" not in body:
        assert finish["stop_sequence"] in body["stop"]


def piece_is_utf8(llama, token: int) -> bool:
    try:
        llama.detokenize([token]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def free_answer(llama, body: dict) -> str:
    return reference_answer(llama, request_for(body))[0]


@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_a_stop_spanning_tokens_and_a_stop_at_the_very_start_end_the_same_answer(request, model):
    llama = request.getfixturevalue(model)
    body = chat("Write one sentence about the sea.", max_tokens=40)
    free = free_answer(llama, body)
    offsets = token_offsets(llama, body)
    boundary = offsets[len(offsets) // 2]
    spanning = free[boundary - 2:boundary + 3]  # two letters of one token, three of the next
    text, finish, _ = assert_same_answer(llama, body | {"stop": ["zzz", spanning]})
    assert text == free[:free.index(spanning)] and finish["stop_sequence"] == spanning
    text, finish, _ = assert_same_answer(llama, body | {"stop": [free[:4]]})
    assert text == "" and finish["stop_sequence"] == free[:4]


def token_offsets(llama, body: dict) -> list[int]:
    """Where each token of the free answer ends in its text (an ASCII answer: bytes are characters)."""
    text, _, tokens = reference_answer(llama, request_for(body))
    assert text.isascii(), text
    ends, length = [], 0
    for token in tokens:
        length += len(llama.detokenize([token]))
        ends.append(length)
    return ends


def test_an_answer_carried_on_counts_its_earlier_text_as_the_host_did(smollm2):
    from dataclasses import replace

    request = replace(request_for(chat("Write one sentence about the sea.", max_tokens=20)),
                      continue_from="The sea is")
    text, finish, tokens = reference_answer(smollm2, request)
    assert replayed_answer(smollm2, request, tokens) == (text, finish)
    assert finish["usage"]["completion_tokens"] > len(smollm2.tokenize(text.encode(), add_bos=False))


def test_characters_llama_cpp_python_lost_from_held_back_text_are_kept(smollm2):
    # Held back as the start of a stop, then sent at the end token by token: each piece of an
    # emoji alone is no UTF-8, so llama-cpp-python sent nothing, and counted nothing.
    request = request_for(chat("Send me a heart emoji and nothing else.", max_tokens=30, stop=["🌱" * 11]))
    lost, lost_finish, tokens = reference_answer(smollm2, request)
    text, finish = replayed_answer(smollm2, request, tokens)
    assert lost == "" and lost_finish["usage"]["completion_tokens"] == 0
    assert text == "🌱" * 10 and finish["finish_reason"] == "length"
    assert finish["usage"]["completion_tokens"] == 30


def test_the_budget_is_the_limit_even_inside_a_character(smollm2):
    # llama-cpp-python sampled past max_tokens to finish a character; a batched host stops.
    request = request_for({"prompt": "Emoji: 😀😃😄😁😆🎉", "max_tokens": 23})
    over, _, tokens = reference_answer(smollm2, request)
    text, finish = replayed_answer(smollm2, request, tokens)
    assert len(tokens) == 24 and text == over[:-1] and finish["finish_reason"] == "length"


SAME_ON_GEMMA = {
    "a chat answer": chat("Say hi in one short sentence.", max_tokens=30),
    "CJK": chat("日本の首都はどこですか？", max_tokens=30),
    "a completion": {"prompt": "The capital of France is", "max_tokens": 20},
}


@pytest.mark.parametrize("body", SAME_ON_GEMMA.values(), ids=SAME_ON_GEMMA.keys())
def test_gemma_s_sentencepiece_answers_are_the_same_too(gemma, body):
    text, _, _ = assert_same_answer(gemma, body)
    assert text


def test_a_token_id_past_the_real_vocabulary_is_a_value_error_not_a_crash(smollm2):
    request = request_for(chat("Hi", max_tokens=5))
    answer = AnswerText(smollm2, prompt_of(smollm2, request), request)
    for token in (smollm2.n_vocab(), -1, 2**31):
        with pytest.raises(ValueError, match="not in this model's vocabulary"):
            answer.add(token)
    assert answer.add(smollm2.tokenize(b"Hello", add_bos=False)[0]) == ("Hello", False)
