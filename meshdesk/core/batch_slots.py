"""Which free sequence a new answer takes in the batching model host, and what of its cache stays.

As llama-server's slots do: each of the host's sequences remembers the tokens its KV cache holds;
a newcomer takes the free one whose tokens share the longest prefix with its prompt and keeps
that prefix, so an agent resending a long conversation evaluates only what is new. The prompt's
last token is always evaluated again: its logits are what the first sample needs.

A request that must repeat exactly (a seed) keeps nothing: a reused prefix changes the batch
shapes, and so the last bits of the logits (docs/decisions.md, "Seeds"). It, and a newcomer that
shares nothing, takes the free sequence remembering least, so the caches worth keeping stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotChoice:
    slot: int
    kept: int  # tokens of the slot's cache that stay: the prompt's first `kept` tokens


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def choose_slot(free: Mapping[int, Sequence[int]], prompt: Sequence[int], reuse: bool = True) -> SlotChoice:
    """`free`: each free slot's remembered tokens. Raises ValueError when none is free."""
    if not free:
        raise ValueError("no free slot")
    if reuse and prompt:
        slot = min(free, key=lambda s: (-common_prefix(free[s], prompt), s))
        kept = min(common_prefix(free[slot], prompt), len(prompt) - 1)
        if kept > 0:
            return SlotChoice(slot, kept)
    return SlotChoice(min(free, key=lambda s: (len(free[s]), s)), 0)
