"""Embeddings in the model host child: which models embed, loading one to embed, and answering
a request of kind "embedding" (`meshdesk.core.openai_api.embeddings`).

A model embeds when its GGUF declares a pooling type that gives one vector per text,
`{arch}.pooling_type` mean (1), cls (2) or last (3), as the converters of BERT, nomic-bert and
the other embedding models write it; llama.cpp reads the key whatever the architecture and pools
the output of a context made with embeddings on. Such a model is loaded (again) with
`embedding=True`, its context no longer than it was trained for, and every text must fit one
batch: a longer one is the client's 400, never cut short. A generative model (no pooling type,
Gemma 3 270M among them) stays generative and answers an embedding request with a request error
that names it; a reranker's "rank" (4) is not a vector either. An embedding model answers chat
and completions with a request error too.

Each text is embedded on its own, so a text's vector never depends on what it was sent with,
and normalised to unit length as OpenAI's are. One event per text, then the finish event.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace

from meshdesk.core.openai_api import GenerationRequest
from meshdesk.core.openai_api.embeddings import vector_event

POOLING_NAMES = {1: "mean", 2: "cls", 3: "last"}  # llama_pooling_type values that give one vector per text
RANK_POOLING = 4


def declared_pooling(metadata: dict) -> int | None:
    """The GGUF's `{arch}.pooling_type` (llama-cpp-python gives metadata values as text)."""
    value = metadata.get(f"{metadata.get('general.architecture', '')}.pooling_type")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def embeds(llama) -> bool:
    """Whether this loaded model is an embedding model (loaded by `for_embedding`)."""
    return bool(llama.context_params.embeddings)


def for_embedding(model, arguments):
    """`model` (host.LoadedModel) as it is when it is generative; an embedding model loaded
    again to embed, on the same devices."""
    import llama_cpp

    llama = model.llama
    if declared_pooling(llama.metadata) not in POOLING_NAMES:
        return model
    trained = llama._model.n_ctx_train()
    context = min(arguments.context, trained) if trained > 0 else arguments.context
    split = {}
    if arguments.rpc:  # registered by the first load
        split = {"n_gpu_layers": -1, "tensor_split": arguments.tensor_split or [1.0] * len(arguments.rpc)}
    llama.close()
    settings = dict(model_path=arguments.model, embedding=True, n_ctx=context, n_batch=context,
                    n_ubatch=context,  # a non-causal model must see a whole text in one micro-batch
                    n_threads=arguments.threads, n_threads_batch=arguments.threads, verbose=False,
                    **({"n_gpu_layers": 0} | split))
    try:
        # Without flash attention a text of n tokens holds n * n scores per head at once (8192
        # tokens, 12 heads: 3 GB). A 2-head test model embedding 8192 tokens peaks at 865 MB
        # without it and 225 MB with it, in a third of the time.
        embedder = llama_cpp.Llama(**settings, flash_attn=True)
    except ValueError:  # a backend that cannot
        embedder = llama_cpp.Llama(**settings)
    return replace(model, llama=embedder, draft=None, draft_name=None)


def handles(model, request: GenerationRequest) -> bool:
    """Whether `serve` answers this request: every embedding request, and every request to an
    embedding model (which answers generation with the client's error)."""
    return request.kind == "embedding" or embeds(model.llama)


def mismatch(llama, request: GenerationRequest) -> str | None:
    """Why this model cannot answer this kind of request, in words for the client."""
    if request.kind == "embedding" and not embeds(llama):
        architecture = llama.metadata.get("general.architecture", "?")
        what = ("a reranker (its GGUF declares rank pooling: scores, not vectors)"
                if declared_pooling(llama.metadata) == RANK_POOLING else
                f"a generative model (its GGUF declares no {architecture}.pooling_type)")
        return (f"the model '{request.model}' cannot embed: it is {what}; /v1/embeddings needs an "
                f"embedding model such as nomic-embed-text or bge")
    if request.kind != "embedding" and embeds(llama):
        pooling = POOLING_NAMES.get(declared_pooling(llama.metadata), "its")
        return (f"the model '{request.model}' is an embedding model ({pooling} pooling) and does not "
                f"generate text; send it to POST /v1/embeddings")
    return None


def serve(model, _chat, connection: socket.socket, request: GenerationRequest) -> None:
    """Answers one request `handles` took: the vectors, or the client's error."""
    llama = model.llama
    problem = mismatch(llama, request) or too_long(llama, request)
    if problem is not None:
        message, param = problem if isinstance(problem, tuple) else (problem, "model")
        send_line(connection, {"type": "error", "kind": "request", "message": message, "param": param})
        return
    prompt_tokens = 0
    for index, text in enumerate(request.input):
        if node_gone(connection):
            return
        vector, tokens = llama.embed(text, normalize=True, truncate=False, return_count=True)
        prompt_tokens += tokens
        send_line(connection, vector_event(index, vector))
    send_line(connection, {"type": "finish", "finish_reason": "stop",
                           "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 0}})


def too_long(llama, request: GenerationRequest) -> tuple[str, str] | None:
    """The first text longer than this model embeds at once, tokenized as `Llama.embed` does."""
    limit = min(llama.n_ctx(), llama.n_batch, llama.context_params.n_ubatch)
    for index, text in enumerate(request.input):
        count = len(llama.tokenize(text.encode("utf-8")))
        if count > limit:
            return (f"'input[{index}]' has {count} tokens; the model '{request.model}' embeds at most "
                    f"{limit} tokens per text (texts are never cut short)", f"input[{index}]")
    return None


def node_gone(connection: socket.socket) -> bool:
    """Whether the node closed the connection (it stopped waiting): no more work for it."""
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        connection.setblocking(True)


def send_line(connection: socket.socket, payload: dict) -> None:
    connection.sendall(json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n")
