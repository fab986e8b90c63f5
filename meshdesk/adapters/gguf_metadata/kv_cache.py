"""How many bytes of KV cache a model needs per token of context, from its GGUF header.

llama.cpp (0.3.36, as the model host child loads it) keeps K and V in f16 for every layer and
every cell of the context: per layer `head_count_kv x (key_length + value_length)` values,
with `key_length`/`value_length` defaulting to `embedding_length / head_count` and
`head_count_kv` to `head_count`. Sliding-window layers (Gemma 3: five in six) are sized by the
whole context too, because `llama_context_default_params` sets `swa_full` and the host does not
change it: measured on Gemma 3 270M at 16384 tokens, llama.cpp's two caches are 48 + 240 MiB,
exactly 18 layers x 256 x 2 x 2 bytes x 16384. A per-layer `head_count_kv` (an array, which the
header walk skips) is taken as `head_count` on every layer: an upper bound. MLA models
(DeepSeek 2, GLM 4.x lite) are counted by their key/value lengths as written: also an upper
bound of what llama.cpp keeps.
"""

from __future__ import annotations

from gguf.constants import Keys

KV_BYTES_PER_VALUE = 2  # f16


def kv_bytes_per_token(metadata: dict[str, object], architecture: str | None) -> int | None:
    """Bytes of K and V, all layers, for one token; None when the header does not say enough
    (no attention heads: a recurrent model, or an unknown layout)."""
    if architecture is None:
        return None

    def number(key: str) -> int | None:
        value = metadata.get(key.format(arch=architecture))
        return value if type(value) is int and value > 0 else None

    layers = number(Keys.LLM.BLOCK_COUNT)
    heads = number(Keys.Attention.HEAD_COUNT)
    if layers is None or heads is None:
        return None
    kv_heads = number(Keys.Attention.HEAD_COUNT_KV) or heads
    embedding = number(Keys.LLM.EMBEDDING_LENGTH)
    head_size = embedding // heads if embedding else None
    key_length = number(Keys.Attention.KEY_LENGTH) or head_size
    value_length = number(Keys.Attention.VALUE_LENGTH) or head_size
    if key_length is None or value_length is None:
        return None
    return layers * kv_heads * (key_length + value_length) * KV_BYTES_PER_VALUE
