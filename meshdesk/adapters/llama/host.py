"""The model host child process: one `llama_cpp.Llama`, serving generations to its node.

Run as `python -m meshdesk.adapters.llama.host --model PATH [--parallel N] [--draft PATH]
[--speculative MODE]`. It loads the model (and a draft model for speculative decoding, see
`speculative.py`; without one, prompt lookup proposes, see `prompt_lookup_draft.py`), listens on
127.0.0.1 (never anything else), prints one JSON line `{"event": "ready", "port": N, "parallel":
N, "context": TOKENS, "speculation": MODE}` on stdout (with `"draft": FILE NAME` when a draft
runs) and then serves each connection on its own thread. The node sends a request as one JSON
line; the host answers with JSON lines (see `meshdesk.node.host_protocol`). Up to `--parallel`
answers are decoded together by one engine thread (`batch_engine.py`), each its own sequence of
`--context` tokens; the rest wait in arrival order. An answer whose connection goes away leaves
the batch within a few tokens. A request with `continue_from` carries on an answer whose host was
lost (`meshdesk.core.continuation`). The process exits when its stdin closes, so it never
outlives the node that started it, however that node died.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from meshdesk.adapters.llama import embedding
from meshdesk.adapters.llama import grammar as grammars
from meshdesk.adapters.llama.answer_text import AnswerText
from meshdesk.adapters.llama.batch_engine import BatchEngine
from meshdesk.adapters.llama.batch_sequence import Answer
from meshdesk.adapters.llama.chat_template import ChatFormat, chat_format
from meshdesk.adapters.llama.common import announce, exit_when_parent_goes, register_rpc_servers
from meshdesk.adapters.llama.grammar_sampler import GrammarTooAmbiguous, with_grammar_first
from meshdesk.core import continuation
from meshdesk.core.openai_api import GenerationRequest

LISTEN_HOST = "127.0.0.1"
SPECULATION_MODES = ("auto", "draft", "ngram", "off")
MOST_PARALLEL = 64
SEND_TIMEOUT_SECONDS = 60  # a node that reads nothing for a minute holds the engine no longer


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshdesk-model-host")
    parser.add_argument("--model", required=True)
    parser.add_argument("--context", type=int, default=4096, help="tokens per answer: prompt and answer")
    parser.add_argument("--parallel", type=int, default=1, metavar="N",
                        help="answers decoded together, each with its own --context (default: 1)")
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
    with sequences(arguments.parallel):
        llama = with_grammar_first(model_class)(
            model_path=arguments.model,
            n_ctx=arguments.context * arguments.parallel,
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


@contextlib.contextmanager
def sequences(parallel: int):
    """While a `Llama` is made: its context holds `parallel` sequences in one unified cache of
    n_ctx = parallel x context. Unified, because llama.cpp splits a step over separate caches into
    one micro-batch per sequence: on a split that is a trip to each member per answer, not per step
    (docs/decisions.md, "Batching"). Each slot holds at most `context` tokens (the engine trims
    a reused one first), so the answers still never take each other's room. llama-cpp-python has
    no parameter for it and reads llama.cpp's defaults just before setting its own."""
    import llama_cpp.llama_cpp as low_level

    defaults = low_level.llama_context_default_params

    def with_sequences():
        params = defaults()
        params.n_seq_max, params.kv_unified = parallel, True
        return params

    low_level.llama_context_default_params = with_sequences
    try:
        yield
    finally:
        low_level.llama_context_default_params = defaults


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


def prompt_for_request(llama, chat: ChatFormat, request: GenerationRequest, context: int | None = None) -> Prompt:
    """The request's prompt, or PromptRejected; `context`: tokens one answer may hold."""
    context = context or llama.n_ctx()
    try:
        prompt = prompt_for(llama, chat, request)
    except grammars.GrammarError as error:
        raise PromptRejected(str(error)) from None
    except Exception as error:  # the template's raise_exception, jinja2 errors, bad text
        raise PromptRejected(f"cannot build a prompt from these messages: {error}") from None
    if not prompt.tokens:  # an empty completion prompt, on a model that adds no start token
        start = llama.token_bos()
        if start < 0:
            raise PromptRejected("the prompt is empty, and this model has no start token to begin from")
        prompt = replace(prompt, tokens=[start])  # generate from the start, as a fresh context would
    if len(prompt.tokens) >= context and not request.continue_from:  # carried on: "length"
        raise PromptRejected(f"the prompt has {len(prompt.tokens)} tokens; this model's context "
                             f"holds {context}")
    return prompt


def token_budget(context: int, prompt: Prompt, request: GenerationRequest) -> int:
    """What the request asked for, but never past the end of its sequence's context."""
    return continuation.token_budget(request.max_tokens, context - len(prompt.tokens), prompt.tokens_so_far)


def send_line(connection: socket.socket, payload: dict) -> None:
    connection.sendall(json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n")


def read_request(connection: socket.socket) -> GenerationRequest:
    with connection.makefile("rb") as reader:
        line = reader.readline(16 * 1024 * 1024)
    return GenerationRequest.from_wire(json.loads(line))


class HostServer:
    """Turns each connection's request into an answer for the batch engine (or, for an
    embedding model, embeds it here, one request at a time)."""

    def __init__(self, model: LoadedModel, chat: ChatFormat, parallel: int = 1, context: int | None = None):
        self.model = model
        self.chat = chat
        self.parallel = parallel
        self.context = context or model.llama.n_ctx()
        self.embedding_turn = threading.Lock()
        self.engine_made = threading.Lock()
        self._engine: BatchEngine | None = None

    @property
    def engine(self) -> BatchEngine:
        """Made with the first generation: an embedding model never has one."""
        with self.engine_made:
            if self._engine is None:
                proposer = proposer_factory(self.model, self.context)
                self._engine = BatchEngine(self.model, self.parallel, self.context, proposer)
                threading.Thread(target=self._engine.run, name="batch engine", daemon=True).start()
            return self._engine

    def serve(self, connection: socket.socket, request: GenerationRequest) -> None:
        if embedding.handles(self.model, request):
            with self.embedding_turn:
                return embedding.serve(self.model, self.chat, connection, request)
        llama = self.model.llama
        prompt = prompt_for_request(llama, self.chat, request, self.context)
        answer = Answer(connection, request, prompt, AnswerText(llama, prompt, request),
                        token_budget(self.context, prompt, request), sampler=None)
        if answer.budget <= 0:  # nothing left to write (an answer carried on to its end)
            return answer.finish(None)
        answer.connection.settimeout(SEND_TIMEOUT_SECONDS)
        self.engine.submit(answer)
        answer.done.wait()


def proposer_factory(model: LoadedModel, context: int):
    """Each answer's proposer: a fresh prompt lookup of its own, or the one draft model."""
    draft = model.draft
    if draft is None:
        return None
    if draft.mode == "ngram":
        from meshdesk.adapters.llama.prompt_lookup_draft import PromptLookupDraft

        def lookup(seeded: bool):
            proposer = PromptLookupDraft(draft.draft_max, context=context, row_cost=draft.row_cost)
            proposer.begin(seeded=seeded)
            return proposer
        return lookup

    def shared_draft(seeded: bool):
        if seeded:
            draft.reset()  # its proposals then depend on this request alone
        draft.begin(seeded=seeded)
        return draft
    return shared_draft


def handle_connection(server: HostServer, connection: socket.socket) -> None:
    with connection:
        try:
            request = read_request(connection)
        except Exception as error:  # a malformed request must not take the host down
            send_line(connection, {"type": "error", "kind": "request",
                                   "message": f"bad request to model host: {error}"})
            return
        try:
            server.serve(connection, request)
        except OSError:
            pass  # the node went away mid-answer; nothing left to tell it
        except (PromptRejected, GrammarTooAmbiguous) as error:
            send_line(connection, {"type": "error", "kind": "request", "message": str(error)})
        except Exception as error:
            send_line(connection, {"type": "error", "kind": "server", "message": f"generation failed: {error}"})


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    exit_when_parent_goes()
    for name, value in (("--draft-max", arguments.draft_max), ("--ngram-max", arguments.ngram_max),
                        ("--parallel", arguments.parallel), ("--context", arguments.context)):
        if value < 1:
            announce({"event": "failed", "message": f"{name} must be at least 1"})
            return 1
    if arguments.parallel > MOST_PARALLEL:
        announce({"event": "failed", "message": f"--parallel must be at most {MOST_PARALLEL}"})
        return 1
    try:
        model = embedding.for_embedding(load_model(arguments), arguments)  # an embedding model loads to embed
    except Exception as error:
        announce({"event": "failed", "message": f"could not load {arguments.model}: {error}"})
        return 1
    chat = chat_format(model.llama)
    parallel = 1 if embedding.embeds(model.llama) else arguments.parallel
    server = HostServer(model, chat, parallel, model.llama.n_ctx() // parallel)
    listener = socket.create_server((LISTEN_HOST, 0))
    ready = {"event": "ready", "port": listener.getsockname()[1], "context": server.context,
             "parallel": parallel, "speculation": model.speculation}
    if model.draft_name is not None:
        ready |= {"draft": model.draft_name, "draft_max": model.draft.draft_max}
    elif model.draft is not None:
        ready |= {"ngram_max": model.draft.draft_max, "ngram_row_cost": model.draft.row_cost}
    if model.draft_error is not None:
        ready["draft_error"] = model.draft_error
    announce(ready)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=handle_connection, args=(server, connection), daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
