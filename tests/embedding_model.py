"""A tiny embedding model for tests: a 2-layer BERT (100 KB) that llama.cpp loads and embeds with.

Its GGUF declares `bert.pooling_type` CLS, as the converters of real embedding models (BERT,
bge, nomic) do; its weights are random, so its vectors mean nothing, but they are real
llama.cpp output: deterministic, unit length once normalised, different for different texts.
Word-initial tokens carry "▁" and pieces inside a word do not, as llama.cpp's WPM tokenizer
expects; each letter is a token, so a text has about as many tokens as characters.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

DIMENSIONS = 32
CONTEXT = 128  # tokens it was "trained" for: the most one text may have


def write_tiny_bert(path: Path, pooling: gguf.PoolingType | None = gguf.PoolingType.CLS) -> Path:
    """`pooling=None` writes the same model declaring no pooling type: not an embedding model."""
    n_embd, n_layer, n_ff = DIMENSIONS, 2, 64
    writer = gguf.GGUFWriter(path, "bert")
    writer.add_name("tiny test embedder")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(2)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    characters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *("\u2581" + c for c in characters), *characters]
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 2, 3, 3, 3] + [1] * (len(tokens) - 5))
    writer.add_bos_token_id(2)  # [CLS]
    writer.add_eos_token_id(3)  # [SEP]
    writer.add_sep_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_unk_token_id(1)
    writer.add_mask_token_id(4)
    writer.add_token_type_count(2)
    random = np.random.default_rng(11)

    def weights(name: str, *shape: int) -> None:
        writer.add_tensor(name, (random.standard_normal(shape) * 0.2).astype(np.float32))

    def norm(name: str) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(n_embd, np.float32))

    weights("token_embd.weight", len(tokens), n_embd)
    weights("token_types.weight", 2, n_embd)
    weights("position_embd.weight", CONTEXT, n_embd)
    norm("token_embd_norm")
    for block in range(n_layer):
        for name in ("q", "k", "v", "output"):
            weights(f"blk.{block}.attn_{name}.weight", n_embd, n_embd)
            writer.add_tensor(f"blk.{block}.attn_{name}.bias", np.zeros(n_embd, np.float32))
        norm(f"blk.{block}.attn_output_norm")
        weights(f"blk.{block}.ffn_up.weight", n_ff, n_embd)
        writer.add_tensor(f"blk.{block}.ffn_up.bias", np.zeros(n_ff, np.float32))
        weights(f"blk.{block}.ffn_down.weight", n_embd, n_ff)
        writer.add_tensor(f"blk.{block}.ffn_down.bias", np.zeros(n_embd, np.float32))
        norm(f"blk.{block}.layer_output_norm")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
