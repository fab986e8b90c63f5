"""The model host's guards, on a real llama.cpp with the real SmolLM2, each request served by the
child's own `handle_connection` over a real 127.0.0.1 TCP connection: a grammar too ambiguous to
run, a node that stops waiting while output is held, client stops under a grammar, and which stop
ended an answer."""

from __future__ import annotations

import json
import socket
import threading
from types import SimpleNamespace

import pytest

from meshdesk.adapters.llama import grammar, host
from meshdesk.adapters.llama.chat_template import chat_format
from meshdesk.adapters.llama.grammar_sampler import TOO_AMBIGUOUS, detokenize_keeping
from meshdesk.core.openai_api import GenerationRequest

ADD = {"name": "add", "description": "Adds two integers",
       "parameters": {"type": "object", "required": ["a", "b"],
                      "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}
# Each definition offers the same branch twice: llama.cpp keeps a parse stack for each way of
# reading the text, so every "[" doubles them (the reviewer's 30 $defs, as GBNF).
AMBIGUOUS = "root ::= d0\n" + "".join(f'd{i} ::= "[" d{i + 1} "]" | "[" d{i + 1} "]"\n' for i in range(30)) + \
    'd30 ::= "0"\n'
ENDLESS = 'root ::= "<tool_call>\\n" digits\ndigits ::= [0-9] digits\n'  # never complete: no end of turn


@pytest.fixture(scope="module")
def model(smollm2_model_path):
    import llama_cpp

    from meshdesk.adapters.llama.grammar_sampler import with_grammar_first

    llama = with_grammar_first(llama_cpp.Llama)(model_path=str(smollm2_model_path), n_ctx=2048, n_threads=2,
                                                verbose=False)
    return host.HostServer(host.LoadedModel(llama), chat_format(llama))


def wire(content="Add 2 and 3.", **fields) -> dict:
    base = dict(kind="chat", model="smollm2", messages=({"role": "user", "content": content},), prompt="",
                max_tokens=8, temperature=0.0, top_p=1.0, stop=(), seed=1, stream=True, include_usage=False)
    return GenerationRequest(**(base | fields)).to_wire()


def start(model, request: dict) -> tuple[socket.socket, threading.Thread]:
    """The node's end of a connection to the child serving `request` (in a thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    node = socket.create_connection(listener.getsockname())
    child, _ = listener.accept()
    listener.close()
    served = threading.Thread(target=host.handle_connection, args=(model, child), daemon=True)
    served.start()
    node.sendall(json.dumps(request).encode() + b"\n")
    return node, served


def serve(model, request: dict) -> list[dict]:
    node, served = start(model, request)
    with node, node.makefile("rb") as reader:
        events = [json.loads(line) for line in reader]
    served.join()
    return events


def test_a_grammar_too_ambiguous_to_run_ends_with_a_request_error_and_the_next_request_is_served(model, monkeypatch):
    monkeypatch.setattr(grammar, "grammar_text", lambda constraint: AMBIGUOUS)
    events = serve(model, wire(tools=(ADD,), tool_choice="required", max_tokens=64))
    assert events[-1] == {"type": "error", "kind": "request", "message": TOO_AMBIGUOUS}
    assert all(event["type"] == "delta" for event in events[:-1])
    monkeypatch.undo()
    assert serve(model, wire(max_tokens=4))[-1]["type"] == "finish"


def test_a_node_gone_while_a_call_is_held_frees_the_child_for_the_next_request(model, monkeypatch):
    monkeypatch.setattr(grammar, "grammar_text", lambda constraint: ENDLESS)
    node, served = start(model, wire(tools=(ADD,), tool_choice="required", max_tokens=100_000))
    node.close()  # the client went away; nothing streams (a call is held whole), so no send fails
    served.join(timeout=30)  # the context holds ~2000 tokens: a minute of generating without the check
    assert not served.is_alive()
    monkeypatch.undo()
    assert serve(model, wire(max_tokens=4))[-1]["type"] == "finish"


def test_client_stops_do_not_cut_an_answer_the_grammar_shapes(model):
    events = serve(model, wire(tools=(ADD,), tool_choice="required", parallel_tool_calls=False,
                               stop=("\n", "add"), max_tokens=64))
    finish = events[-1]
    assert finish["finish_reason"] == "tool_calls" and "stop_sequence" not in finish
    assert [call["name"] for call in finish["tool_calls"]] == ["add"]


def test_the_finish_names_the_client_stop_that_ended_the_answer(model):
    free = serve(model, wire(content="Count from one to ten in words.", max_tokens=24))
    text = "".join(event["text"] for event in free if event["type"] == "delta")
    assert free[-1]["finish_reason"] == "length" and "stop_sequence" not in free[-1]
    word = text.split()[len(text.split()) // 2]
    stopped = serve(model, wire(content="Count from one to ten in words.", max_tokens=24, stop=("@@never@@", word)))
    assert stopped[-1]["finish_reason"] == "stop" and stopped[-1]["stop_sequence"] == word
    assert "".join(event["text"] for event in stopped if event["type"] == "delta") == text[:text.index(word)]


def test_marker_tokens_are_rendered_where_plain_text_drops_them():
    """A fake vocabulary where [TOOL_CALLS] (7) and [ARGS] (8) are control tokens: plain
    detokenizing renders them as nothing, as llama.cpp does with special=False."""
    vocabulary = {1: b"get", 2: b"_weather", 3: b'{"city": "Paris"}', 7: b"[TOOL_CALLS]", 8: b"[ARGS]"}

    def detokenize(tokens, special):
        return b"".join(vocabulary[t] for t in tokens if special or t not in (7, 8))

    tokens = [7, 1, 2, 8, 3]
    assert detokenize(tokens, False) == b'get_weather{"city": "Paris"}'
    assert detokenize_keeping(tokens, frozenset({7, 8}), detokenize) == b'[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    assert detokenize_keeping(tokens, frozenset(), detokenize) == detokenize(tokens, False)


def write_marker_vocabulary(path) -> str:
    """A vocabulary-only llama GGUF (SentencePiece, no weights) whose [TOOL_CALLS], [ARGS] and
    [CALL_ID] are control tokens, as in Mistral's v3+ tokenizers."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_block_count(1)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_layer_norm_rms_eps(1e-5)
    pieces = list("abcdefghijklmnopqrstuvwxyz_{}\":,0123456789 ")
    tokens = ["<unk>", "<s>", "</s>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    writer.add_tokenizer_model("llama")
    writer.add_add_space_prefix(False)
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([2, 3, 3, 3, 3, 3] + [6] * 256 + [1] * len(pieces))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_a_real_tokenizer_s_control_token_markers_reach_the_splitter_as_text(tmp_path):
    import llama_cpp

    from meshdesk.adapters.llama.grammar_sampler import with_grammar_first
    from meshdesk.adapters.llama.tool_output import marker_tokens, output_for

    llama = with_grammar_first(llama_cpp.Llama)(model_path=write_marker_vocabulary(tmp_path / "markers.gguf"),
                                                vocab_only=True, verbose=False)
    answer = llama.tokenize(b'[TOOL_CALLS]add[ARGS]{"a":2,"b":3}', add_bos=False, special=True)
    assert llama.detokenize(answer) == b'add{"a":2,"b":3}'  # what llama-cpp-python streamed before
    assert marker_tokens(llama) == {llama.tokenize(marker.encode(), add_bos=False, special=True)[0]
                                    for marker in ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")}
    llama.kept_tokens = marker_tokens(llama)
    text = llama.detokenize(answer).decode()
    assert text == '[TOOL_CALLS]add[ARGS]{"a":2,"b":3}'
    output = output_for(SimpleNamespace(tools=(ADD,), tool_choice="auto", continue_from=None))
    assert output.feed(text) == ""
    _, calls = output.finish()
    assert [(call["name"], json.loads(call["arguments"])) for call in calls] == [("add", {"a": 2, "b": 3})]

