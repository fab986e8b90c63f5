"""The model host child process: one `llama_cpp.Llama`, serving generations to its node.

Run as `python -m meshdesk.adapters.llama.host --model PATH [--draft PATH] [--speculative MODE]`.
It loads the model (and a draft model for speculative decoding, see `speculative.py`; without
one, prompt lookup proposes, see `prompt_lookup_draft.py`), listens on 127.0.0.1 (never
anything else), prints one JSON line `{"event": "ready", "port": N, "speculation": MODE}` on
stdout (with `"draft": FILE NAME` when a draft runs) and then serves one generation at a time. The node sends a request as one JSON line; the host
answers with JSON lines (see `meshdesk.node.host_protocol`). A request whose connection goes
away stops generating at the next token. A request with `continue_from` carries on an answer
whose host was lost (`meshdesk.core.continuation`). The process exits when its stdin closes, so it never
outlives the node that started it, however that node died.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from meshdesk.adapters.llama import embedding
from meshdesk.adapters.llama import grammar as grammars
from meshdesk.adapters.llama.chat_template import ChatFormat, chat_format
from meshdesk.adapters.llama.common import announce, exit_when_parent_goes, register_rpc_servers
from meshdesk.adapters.llama.grammar_sampler import GrammarTooAmbiguous, with_grammar_first
from meshdesk.adapters.llama.tool_output import PlainOutput, marker_tokens, output_for
from meshdesk.core import continuation
from meshdesk.core.openai_api import GenerationRequest

LISTEN_HOST = "127.0.0.1"
SPECULATION_MODES = ("auto", "draft", "ngram", "off")
GONE_CHECK_TOKENS = 16  # how often a generation asks whether its node still waits (one recv)


@dataclass
class Generation:
    """Counts tokens and carries the cancel flag of one running generation. While output is held
    back (a tool call, an answer that may start one) no delta's failed send tells that the node
    went away, so every `GONE_CHECK_TOKENS` tokens it looks at the connection itself."""

    prompt_tokens: int = 0
    cancelled: bool = False
    text_parts: list[str] = field(default_factory=list)
    connection: socket.socket | None = None
    tokens: int = 0
    input_ids: object = ()  # the prompt and the answer but its last token, as llama-cpp-python last showed

    def stopping_criteria(self, input_ids, _logits) -> bool:
        self.tokens += 1
        self.input_ids = input_ids
        if self.tokens % GONE_CHECK_TOKENS == 0 and self.connection is not None and not self.cancelled:
            self.cancelled = embedding.node_gone(self.connection)
        return self.cancelled


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshdesk-model-host")
    parser.add_argument("--model", required=True)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--rpc", action="append", default=[], metavar="127.0.0.1:PORT",
                        help="an RPC server to split layers onto, in device order (repeatable)")
    parser.add_argument("--tensor-split", type=lambda text: [float(x) for x in text.split(",")],
                        help="each RPC device's share, in the same order")
    parser.add_argument("--draft", metavar="PATH",
                        help="a small model with the same vocabulary, for speculative decoding")
    parser.add_argument("--draft-max", type=int, default=8, metavar="N",
                        help="tokens the draft proposes per step (default: 8)")
    parser.add_argument("--speculative", choices=SPECULATION_MODES, default="auto",
                        help="auto: the draft when one is given and loads, else prompt lookup; "
                             "draft: the draft only; ngram: prompt lookup only; off (default: auto)")
    parser.add_argument("--ngram-max", type=int, default=8, metavar="N",
                        help="most tokens prompt lookup proposes per step (default: 8)")
    return parser.parse_args(argv)


@dataclass
class LoadedModel:
    llama: object
    draft: object | None = None      # speculative.Proposer: a DraftModel or a PromptLookupDraft
    draft_name: str | None = None    # the draft model's file name, when one runs
    draft_error: str | None = None   # why the draft asked for is not running

    @property
    def speculation(self) -> str:
        """What proposes tokens: "draft", "ngram", or "off"."""
        return self.draft.mode if self.draft is not None else "off"


def load_model(arguments: argparse.Namespace) -> LoadedModel:
    import llama_cpp

    split = {}
    if arguments.rpc:
        register_rpc_servers(arguments.rpc)
        # Every layer goes to the RPC devices; the host's own worker is the last of them.
        split = {"n_gpu_layers": -1, "tensor_split": arguments.tensor_split or [1.0] * len(arguments.rpc)}
    wants_draft = arguments.draft and arguments.speculative in ("auto", "draft")
    draft, draft_error = load_draft(arguments) if wants_draft else (None, None)
    if arguments.speculative == "draft" and not arguments.draft:
        draft_error = "no draft model for this model (--speculative draft): serving without speculation"
    if draft is None and arguments.speculative in ("draft", "off"):
        model_class = llama_cpp.Llama
    else:
        from meshdesk.adapters.llama.speculative import SpeculativeLlama as model_class
    llama = with_grammar_first(model_class)(
        model_path=arguments.model,
        n_ctx=arguments.context,
        n_threads=arguments.threads,
        n_threads_batch=arguments.threads,
        verbose=False,
        **({"n_gpu_layers": 0} | split),
    )
    if draft is not None:
        from meshdesk.adapters.llama.speculative import DraftModel, vocabulary_mismatch

        draft_error = vocabulary_mismatch(llama, draft)
        if draft_error is None:
            speculation = DraftModel(draft, arguments.draft_max)
            llama.attach_draft(speculation)
            return LoadedModel(llama, speculation, Path(arguments.draft).name)
        del draft
    if arguments.speculative in ("auto", "ngram"):
        from meshdesk.adapters.llama.prompt_lookup_draft import PromptLookupDraft, measure_row_cost

        lookup = PromptLookupDraft(arguments.ngram_max, context=llama.n_ctx())
        llama.attach_draft(lookup)
        lookup.row_cost = measure_row_cost(llama)
        lookup.reset()
        return LoadedModel(llama, lookup, draft_error=draft_error)
    return LoadedModel(llama, draft_error=draft_error)


def load_draft(arguments: argparse.Namespace):
    """The draft `Llama` on this machine's CPU, or (None, why not): a model serves without it."""
    import llama_cpp

    try:
        return llama_cpp.Llama(
            model_path=arguments.draft,
            n_ctx=arguments.context,  # it must see the whole sequence it continues
            n_threads=arguments.threads,
            n_threads_batch=arguments.threads,
            n_gpu_layers=0,
            op_offload=False,  # never onto the RPC devices the main model splits across
            verbose=False,
        ), None
    except Exception as error:
        return None, f"could not load the draft {Path(arguments.draft).name}: {error}"


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    stop: list[str]
    stopping_criteria: list
    prompt_tokens: int = -1  # the client's prompt alone, without an answer carried on (-1: all)
    tokens_so_far: int = 0   # of the answer carried on (`continue_from`)
    grammar: object | None = None  # a llama_cpp.LlamaGrammar the answer must follow

    def counted(self) -> int:
        return len(self.tokens) if self.prompt_tokens < 0 else self.prompt_tokens


def prompt_for(llama, chat: ChatFormat, request: GenerationRequest) -> Prompt:
    if request.kind == "completion":
        text, add_bos, stop, criteria = request.prompt, True, list(request.stop), []
    else:
        formatted = chat.render(request)  # ends with the open assistant turn
        text, add_bos = formatted.prompt, not formatted.added_special
        criteria = list(formatted.stopping_criteria or [])
        stop = [*request.stop, *formatted.stop, *chat.extra_stop]
    tokens = llama.tokenize(continuation.continued_prompt(text, request.continue_from).encode("utf-8"),
                            add_bos=add_bos, special=True)
    if not request.continue_from:
        grammar = grammars.llama_grammar(llama, grammars.constraint_for(request))
        if grammar is not None:  # the grammar ends the answer: a client's stop would cut a call or JSON short
            stop = stop[len(request.stop):]
        return Prompt(tokens, stop, criteria, grammar=grammar)
    # A grammar starts at its root, not inside an answer carried on: that answer goes on freely.
    own = len(llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))
    so_far = len(llama.tokenize(request.continue_from.encode("utf-8"), add_bos=False, special=True))
    return Prompt(tokens, stop, criteria, own, so_far)


class PromptRejected(Exception):
    """The request cannot be turned into a prompt for this model: the client's mistake."""


def prompt_for_request(llama, chat: ChatFormat, request: GenerationRequest) -> Prompt:
    try:
        prompt = prompt_for(llama, chat, request)
    except grammars.GrammarError as error:
        raise PromptRejected(str(error)) from None
    except Exception as error:  # the template's raise_exception, jinja2 errors, bad text
        raise PromptRejected(f"cannot build a prompt from these messages: {error}") from None
    if len(prompt.tokens) >= llama.n_ctx() and not request.continue_from:  # carried on: "length"
        raise PromptRejected(f"the prompt has {len(prompt.tokens)} tokens; this model's context "
                             f"holds {llama.n_ctx()}")
    return prompt


def token_budget(llama, prompt: Prompt, request: GenerationRequest) -> int:
    """What the request asked for, but never past the end of the context."""
    return continuation.token_budget(request.max_tokens, llama.n_ctx() - len(prompt.tokens), prompt.tokens_so_far)


def text_chunks(model: LoadedModel, prompt: Prompt, request: GenerationRequest, generation: Generation):
    """Yields (text, finish_reason) pairs from llama-cpp-python's stream."""
    import llama_cpp

    llama = model.llama
    if request.seed is not None:
        # Reusing a cached prompt prefix changes the batch shapes and so the last bits of the
        # logits; a seeded request must give the same answer every time, so it starts afresh.
        # So do the proposals (a draft's, or prompt lookup's): they decide the batch shapes.
        llama.reset()
        if model.draft is not None:
            model.draft.reset()
    stream = llama.create_completion(
        prompt=prompt.tokens,
        max_tokens=token_budget(llama, prompt, request),
        temperature=request.temperature,
        top_p=request.top_p,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        stop=prompt.stop,
        seed=request.seed,
        grammar=prompt.grammar,
        stream=True,
        stopping_criteria=llama_cpp.StoppingCriteriaList(
            [generation.stopping_criteria, *prompt.stopping_criteria]),
    )
    for chunk in stream:
        choice = chunk["choices"][0]
        yield choice.get("text") or "", choice.get("finish_reason")


def completion_token_count(llama, generation: Generation) -> int:
    text = "".join(generation.text_parts)
    if not text:
        return 0
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def send_line(connection: socket.socket, payload: dict) -> None:
    connection.sendall(json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n")


def send_delta(connection: socket.socket, generation: Generation, text: str) -> None:
    if not text or generation.cancelled:
        return
    try:
        send_line(connection, {"type": "delta", "text": text})
    except OSError:
        generation.cancelled = True


def serve_generation(model: LoadedModel, chat: ChatFormat, connection: socket.socket,
                     request: GenerationRequest) -> None:
    llama = model.llama
    prompt = prompt_for_request(llama, chat, request)
    # Carrying an answer on, its text so far counts as completion, as if one host wrote it all.
    generation = Generation(prompt_tokens=prompt.counted(), text_parts=[request.continue_from or ""],
                            connection=connection)
    finish_reason = None if token_budget(llama, prompt, request) > 0 else "length"
    if model.draft is not None:
        model.draft.begin(seeded=request.seed is not None)
    output = output_for(request)
    llama.kept_tokens = frozenset() if isinstance(output, PlainOutput) else marker_tokens(llama)
    try:
        for text, reason in text_chunks(model, prompt, request, generation) if finish_reason is None else ():
            if text:
                generation.text_parts.append(text)
                send_delta(connection, generation, output.feed(text))
            finish_reason = reason or finish_reason
    finally:
        llama.kept_tokens = frozenset()
    tail, calls = output.finish()
    send_delta(connection, generation, tail)
    if generation.cancelled:
        return
    usage = {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": completion_token_count(llama, generation),
    }
    finish = {"type": "finish", "finish_reason": finish_reason or "stop", "usage": usage}
    stop_sequence = matched_stop(llama, prompt, request, generation) if finish_reason == "stop" else None
    if stop_sequence is not None:
        finish["stop_sequence"] = stop_sequence
    if calls:
        finish |= {"finish_reason": "tool_calls", "tool_calls": calls}
    if model.draft is not None:
        finish["speculative"] = model.draft.finish().to_dict() | {"mode": model.speculation}
    send_line(connection, finish)


def matched_stop(llama, prompt: Prompt, request: GenerationRequest, generation: Generation) -> str | None:
    """The client's stop string that ended the answer, if one did: llama-cpp-python cuts at the
    first of `prompt.stop` (in order) that the answer's text holds, last token included."""
    client = prompt.stop[:len(request.stop)] if prompt.stop[:len(request.stop)] == list(request.stop) else []
    last = getattr(llama, "last_token", None)
    if not client or last is None or len(generation.input_ids) < len(prompt.tokens):
        return None
    answer = [*(int(token) for token in generation.input_ids[len(prompt.tokens):]), last]
    text = llama.detokenize(answer, prev_tokens=prompt.tokens).decode("utf-8", errors="ignore")
    found = [stop for stop in prompt.stop if stop in text]
    return found[0] if found and found[0] in client else None


def read_request(connection: socket.socket) -> GenerationRequest:
    with connection.makefile("rb") as reader:
        line = reader.readline(16 * 1024 * 1024)
    return GenerationRequest.from_wire(json.loads(line))


def handle_connection(model: LoadedModel, chat: ChatFormat, connection: socket.socket) -> None:
    with connection:
        try:
            request = read_request(connection)
        except Exception as error:  # a malformed request must not take the host down
            send_line(connection, {"type": "error", "kind": "request",
                                   "message": f"bad request to model host: {error}"})
            return
        try:
            serve = embedding.serve if embedding.handles(model, request) else serve_generation
            serve(model, chat, connection, request)
        except OSError:
            pass  # the node went away mid-answer; nothing left to tell it
        except (PromptRejected, GrammarTooAmbiguous) as error:
            send_line(connection, {"type": "error", "kind": "request", "message": str(error)})
        except Exception as error:
            send_line(connection, {"type": "error", "kind": "server", "message": f"generation failed: {error}"})


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    exit_when_parent_goes()
    for name, value in (("--draft-max", arguments.draft_max), ("--ngram-max", arguments.ngram_max)):
        if value < 1:
            announce({"event": "failed", "message": f"{name} must be at least 1"})
            return 1
    try:
        model = embedding.for_embedding(load_model(arguments), arguments)  # an embedding model loads to embed
    except Exception as error:
        announce({"event": "failed", "message": f"could not load {arguments.model}: {error}"})
        return 1
    chat = chat_format(model.llama)
    listener = socket.create_server((LISTEN_HOST, 0))
    ready = {"event": "ready", "port": listener.getsockname()[1], "context": model.llama.n_ctx(),
             "speculation": model.speculation}
    if model.draft_name is not None:
        ready |= {"draft": model.draft_name, "draft_max": model.draft.draft_max}
    elif model.draft is not None:
        ready |= {"ngram_max": model.draft.draft_max, "ngram_row_cost": model.draft.row_cost}
    if model.draft_error is not None:
        ready["draft_error"] = model.draft_error
    announce(ready)
    while True:
        connection, _ = listener.accept()
        handle_connection(model, chat, connection)


if __name__ == "__main__":
    raise SystemExit(main())
