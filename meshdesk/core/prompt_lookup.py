"""Prompt-lookup proposals: guess how a token sequence goes on from where its tail appeared before.

An answer that edits, renames or quotes its input repeats long runs of the prompt. When the last
few tokens of the sequence (an n-gram) occurred earlier, the tokens that followed them then are
a good guess for what follows now. `PromptLookup` finds the longest such suffix, from
`largest_ngram` tokens down to `smallest_ngram`, at its most recent earlier occurrence (the
nearest text is the likeliest to be copied on), and proposes up to `count` tokens of what came
after it. Where that continuation runs into the present (a repeating pattern), it goes on with
its own proposals, as the pattern would.

The model host calls it once per main-model pass on contexts of 10k tokens and more, so nothing
is rescanned: an index maps each n-gram to the last position it ended at with a token after it,
and grows with each token appended. A sequence that is not an extension of the one seen (a new
request) rebuilds the index from the part they share.
"""

from __future__ import annotations

from collections.abc import Sequence

LARGEST_NGRAM = 4
SMALLEST_NGRAM = 2


class PromptLookup:
    def __init__(self, largest_ngram: int = LARGEST_NGRAM, smallest_ngram: int = SMALLEST_NGRAM):
        if not 1 <= smallest_ngram <= largest_ngram:
            raise ValueError("n-gram sizes must satisfy 1 <= smallest <= largest")
        self.largest = largest_ngram
        self.smallest = smallest_ngram
        self.tokens: list[int] = []
        # n-gram -> index of its last token at its latest occurrence that has a token after it
        self.last_end: dict[tuple[int, ...], int] = {}

    def propose(self, sequence: Sequence[int], count: int) -> list[int]:
        """Up to `count` tokens that may follow `sequence` (none when no suffix occurred before)."""
        self.follow(sequence)
        end = self._matched_end()
        if end is None or count < 1:
            return []
        tokens, proposals = self.tokens, []
        length = len(tokens)
        for position in range(end + 1, end + 1 + count):
            proposals.append(tokens[position] if position < length else proposals[position - length])
        return proposals

    def follow(self, sequence: Sequence[int]) -> None:
        """Makes the index describe `sequence`: appends what is new, rebuilds after a divergence."""
        known = len(self.tokens)
        if len(sequence) < known or list(sequence[:known]) != self.tokens:
            shared = 0
            for a, b in zip(self.tokens, sequence):
                if a != b:
                    break
                shared += 1
            self._rebuild(self.tokens[:shared])
        for token in sequence[len(self.tokens):]:
            self.append(int(token))

    def append(self, token: int) -> None:
        tokens = self.tokens
        tokens.append(token)
        # The n-grams ending just before `token` now have a continuation: `token`.
        end = len(tokens) - 2
        for size in range(self.smallest, min(self.largest, end + 1) + 1):
            self.last_end[tuple(tokens[end - size + 1:end + 1])] = end

    def _rebuild(self, tokens: list[int]) -> None:
        self.tokens, self.last_end = [], {}
        for token in tokens:
            self.append(token)

    def _matched_end(self) -> int | None:
        tokens = self.tokens
        for size in range(min(self.largest, len(tokens)), self.smallest - 1, -1):
            end = self.last_end.get(tuple(tokens[-size:]))
            if end is not None:
                return end
        return None
