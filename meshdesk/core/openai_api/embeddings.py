"""POST /v1/embeddings, pure: the body's fields read and bounded, and the answer shaped.

The texts travel in a `GenerationRequest` of kind "embedding" (`request.parse_embedding_request`);
how the vectors are written back (`encoding_format`) and the `dimensions` check stay with the
node the client talks to, so they never cross the mesh. The host answers with one event per
text, {"type": "embedding", "index": i, "embedding": base64 of little-endian float32} (so that
no event outgrows a mesh frame, whatever the count and the length of the vectors), then
{"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": N, "completion_tokens": 0}}.
`EmbeddingAnswer` checks them, since they may come from another node.

Which models embed is the model host's call: one whose GGUF declares a pooling type
(`adapters/llama/embedding.py`). Any other model answers an embedding request with a
request error naming it, and an embedding model answers chat and completions the same way.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe, valid_text

MAX_EMBEDDING_INPUTS = 2048          # OpenAI's bound on the texts of one request
# All texts together, as the JSON they cross the mesh in: a request must fit one mesh frame
# (`core.frames.MAX_FRAME_BYTES`, 1 MiB) whichever node hosts the model.
MAX_EMBEDDING_INPUT_BYTES = 900 * 1024
MAX_EMBEDDING_DIMENSIONS = 65_536    # no model's vectors are longer; a host claiming more is broken
ENCODING_FORMATS = ("float", "base64")
EMBEDDING_FIELDS = ("model", "input", "encoding_format", "dimensions", "user")

_MISSING = object()


@dataclass(frozen=True)
class EmbeddingOptions:
    """How the answer is written: the parts of the body that never leave this node."""

    encoding_format: str = "float"
    dimensions: int | None = None


def read_embedding_input(body: dict) -> tuple[str, ...]:
    """`input`: one text or a list of texts, each non-empty; token ids are refused by name."""
    value = body.get("input", _MISSING)
    if value is _MISSING or value is None:
        raise RequestError("'input' is required: a string or a list of strings", param="input")
    if isinstance(value, str):
        texts = (_text(value, "input"),)
    elif isinstance(value, list):
        texts = _texts(value)
    else:
        raise RequestError(f"'input' must be a string or a list of strings, got {describe(value)}",
                           param="input")
    size = len(json.dumps(texts, ensure_ascii=False).encode("utf-8"))
    if size > MAX_EMBEDDING_INPUT_BYTES:
        raise RequestError(f"'input' is {size} bytes as JSON; at most {MAX_EMBEDDING_INPUT_BYTES} per request",
                           param="input")
    return texts


def _texts(items: list) -> tuple[str, ...]:
    if not items:
        raise RequestError("'input' must not be an empty list", param="input")
    if all(_is_int(item) for item in items) or any(isinstance(item, list) for item in items):
        raise RequestError("'input' as token ids is not supported; send the text", param="input")
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise RequestError(f"'input' may hold at most {MAX_EMBEDDING_INPUTS} texts, got {len(items)}",
                           param="input")
    return tuple(_text(item, f"input[{index}]") for index, item in enumerate(items))


def _text(item: Any, param: str) -> str:
    if not isinstance(item, str):
        raise RequestError(f"'{param}' must be a string, got {describe(item)}", param=param)
    if not item:
        raise RequestError(f"'{param}' must not be empty", param=param)
    return valid_text(item, param)


def read_embedding_options(body: dict) -> EmbeddingOptions:
    """`encoding_format`, `dimensions` and `user`; any other field is refused by name."""
    unknown = [key for key in body if key not in EMBEDDING_FIELDS]
    if unknown:
        raise RequestError(f"unrecognized request argument supplied: '{unknown[0]}' (this endpoint takes "
                           f"{', '.join(EMBEDDING_FIELDS)})", param=unknown[0])
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise RequestError(f"'encoding_format' must be \"float\" or \"base64\", got {describe(encoding_format)}",
                           param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise RequestError(f"'dimensions' must be a positive integer, got {describe(dimensions)}",
                           param="dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError(f"'user' must be a string, got {describe(user)}", param="user")
    return EmbeddingOptions(encoding_format, dimensions)


def vector_event(index: int, vector) -> dict:
    """What a model host sends for one text: its vector as base64 of little-endian float32."""
    return {"type": "embedding", "index": index, "embedding": encode_vector(list(vector), "base64")}


class EmbeddingAnswer:
    """Gathers a host's `embedding` events, which may come from another node: each index once
    (a host carried on after a lost one sends them again: the last one counts), one length."""

    def __init__(self, count: int):
        self.count = count
        self.vectors: dict[int, list[float]] = {}

    def add(self, event: dict) -> None:
        """ValueError says what is wrong with an answer no client should see."""
        index, encoded = event.get("index"), event.get("embedding")
        if not _is_int(index) or not 0 <= index < self.count:
            raise ValueError(f"the model host sent an embedding for index {describe(index)} of {self.count}")
        if not isinstance(encoded, str) or len(encoded) > 4 * MAX_EMBEDDING_DIMENSIONS * 4 // 3 + 4:
            raise ValueError("the model host sent an embedding that is not base64 text of a vector")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ValueError("the model host sent an embedding that is not valid base64") from None
        width = len(raw) // 4
        if not raw or len(raw) % 4 or any(len(vector) != width for vector in self.vectors.values()):
            raise ValueError("the model host's embeddings are not all of one length")
        vector = list(struct.unpack(f"<{width}f", raw))
        if not all(map(math.isfinite, vector)):
            raise ValueError("the model host sent an embedding that holds NaN or infinity")
        self.vectors[index] = vector

    def complete(self) -> list[list[float]]:
        missing = [index for index in range(self.count) if index not in self.vectors]
        if missing:
            raise ValueError(f"the model host finished without the embedding of input[{missing[0]}]")
        return [self.vectors[index] for index in range(self.count)]


def check_dimensions(options: EmbeddingOptions, width: int, model: str) -> None:
    """Vectors are never cut short: `dimensions` is accepted only when it is the model's own."""
    if options.dimensions is not None and options.dimensions != width:
        raise RequestError(f"'dimensions' must be {width}, the length of the vectors of '{model}' "
                           f"(they are not shortened), got {options.dimensions}", param="dimensions")


def encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    """As OpenAI sends it: the floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def embeddings_body(model: str, vectors: list[list[float]], options: EmbeddingOptions,
                    prompt_tokens: int) -> dict:
    data = [{"object": "embedding", "index": index, "embedding": encode_vector(vector, options.encoding_format)}
            for index, vector in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
