"""Prompt-lookup proposals: guess how a token sequence goes on from where its tail appeared before.

An answer that edits, renames or quotes its input repeats long runs of the prompt. When the last
few tokens of the sequence (an n-gram) occurred earlier, the tokens that followed them then are
a good guess for what follows now. `PromptLookup` finds the longest such suffix, from
`largest_ngram` tokens down to `smallest_ngram`, at its most recent earlier occurrence (the
nearest text is the likeliest to be copied on), and proposes up to `count` tokens of what came
after it. Where that continuation runs into the present (a repeating pattern), it goes on with
its own proposals, as the pattern would.

An answer that copies keeps to its source, so the place being copied is remembered (the copy
position): while each new token is the one after it there, proposals go on from it, even where
the last few tokens also occurred elsewhere. Edits break a copy in two ways, each recovered from:

- a substitution (a rename, a fixed operator): the answer wrote B where the source had A, then
  went on as the source does. The copy carries on past A, and A -> B is remembered (the last
  `renames` of them): later copies of A are proposed as B, and a tail that holds B is looked up
  as A (after a rename the plain tail, holding the new name, occurs nowhere in the source).
  Right after any miss, the source's tokens past A are proposed, as if it were one.
- an insertion or deletion (type hints, a new line): the copy is lost, and found again by the
  next n-gram match. Optionally (`reanchor_window` > 0, off by default: it measured worse on
  prose and no better on code) each next token is first looked for a short way ahead of where
  the copy was, one token being enough there.

The model host calls it once per main-model pass on contexts of 10k tokens and more, so nothing
is rescanned: an index maps each n-gram to the last position it ended at with a token after it,
and grows with each token appended; the copy position follows each token as it is appended.
Everything is a function of the sequence alone (the proposals of a seeded request must not
depend on when they were asked for). A sequence that is not an extension of the one seen (a new
request) rebuilds the index from the part they share.
"""

from __future__ import annotations

from collections.abc import Sequence

LARGEST_NGRAM = 4
SMALLEST_NGRAM = 2
RENAMES = 4           # substitutions remembered (the latest ones)
# How far past a lost copy position one matching token re-anchors it: 0, off. Measured on the
# bench's answers (docs/decisions.md), 32 gained little on code edits and cost prose a tenth.
REANCHOR_WINDOW = 0
REANCHOR_TOKENS = 16  # how long after losing it
STREAK = 4            # tokens a copy must have run for its miss to be guessed past, or re-anchored


class PromptLookup:
    def __init__(self, largest_ngram: int = LARGEST_NGRAM, smallest_ngram: int = SMALLEST_NGRAM,
                 renames: int = RENAMES, reanchor_window: int = REANCHOR_WINDOW, follow_copies: bool = True):
        if not 1 <= smallest_ngram <= largest_ngram:
            raise ValueError("n-gram sizes must satisfy 1 <= smallest <= largest")
        if renames < 0 or reanchor_window < 0:
            raise ValueError("renames and the re-anchoring window must be >= 0")
        self.largest = largest_ngram
        self.smallest = smallest_ngram
        self.most_renames = renames
        self.reanchor_window = reanchor_window
        self.follow_copies = follow_copies  # False: the latest n-gram match at every pass
        # Substitutions are learnt from the answer only, from this position on: a prompt repeats
        # its own code with other names (two loops over two dicts), which the answer does not rename.
        self.answer_start = 0
        self._rebuild([])

    def propose(self, sequence: Sequence[int], count: int) -> list[int]:
        """Up to `count` tokens that may follow `sequence` (none when no suffix occurred before)."""
        self.follow(sequence)
        start = self._next_source_position()
        if start is None or count < 1:
            return []
        tokens, proposals = self.tokens, []
        length = len(tokens)
        for position in range(start, start + count):
            proposals.append(self.renamed(tokens[position]) if position < length
                             else proposals[position - length])
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
        self._follow_copy(token)

    def start_answer(self, position: int) -> None:
        """The answer starts at `position`: substitutions are learnt from there on, and those of
        an earlier answer are forgotten."""
        self.answer_start = position
        self.renames, self.originals = {}, {}

    def renamed(self, token: int) -> int:
        return self.renames.get(token, token)

    # --- the copy position -------------------------------------------------------------------

    def _follow_copy(self, token: int) -> None:
        """Moves the copy position over `token`, the sequence's new last token."""
        now = len(self.tokens) - 1
        copy = self.copy
        if self.follow_copies and copy is not None and copy + 1 < now and self._same(self.tokens[copy + 1], token):
            self.copy, self.streak = copy + 1, self.streak + 1
            if token == self.tokens[copy + 1] and token in self.renames:
                self._forget(token)  # the answer kept the old name here: that was no rename
            return
        if copy is not None and self.follow_copies:  # a miss: where the copy was, and when it was lost
            self.lost, self.lost_at, self.copy = copy, now, None
            if self.streak < STREAK:
                self.lost = None  # a copy of a few tokens says little about where it went
            self._found(self._matched_end())
            return
        if not self.follow_copies:
            self.copy = self._matched_end()
            return
        if self.lost is not None and now == self.lost_at + 1 and self._is_substitution(token):
            source = self.lost + 1
            self._learn(self.tokens[source], self.tokens[now - 1])
            self.copy, self.lost = source + 1, None
            return
        self._found(self._matched_end())
        if self.copy is None:
            self._found(self._reanchored(token))

    def _found(self, copy: int | None) -> None:
        self.copy, self.streak = copy, 0
        if copy is not None:
            self.lost = None

    def _is_substitution(self, token: int) -> bool:
        after = self.lost + 2
        return after < len(self.tokens) - 2 and self._same(self.tokens[after], token)

    def _reanchored(self, token: int) -> int | None:
        """Where `token` occurs a short way past the lost copy position, soon after losing it."""
        lost = self.lost
        if lost is None or len(self.tokens) - 1 - self.lost_at > REANCHOR_TOKENS:
            return None
        last = min(lost + self.reanchor_window, self.lost_at - 1)
        return next((p for p in range(lost + 1, last + 1) if self._same(self.tokens[p], token)), None)

    def _next_source_position(self) -> int | None:
        if self.copy is not None:
            return self.copy + 1
        if self.lost is not None and self.lost_at == len(self.tokens) - 1 and self.lost + 2 < self.lost_at:
            return self.lost + 2  # just missed: as if the token were a substitution
        return None

    def _same(self, source: int, token: int) -> bool:
        return token == source or self.renames.get(source) == token

    def _forget(self, source: int) -> None:
        del self.renames[source]
        self.originals = {new: old for old, new in self.renames.items()}

    def _learn(self, source: int, token: int) -> None:
        if self.most_renames == 0 or source == token or len(self.tokens) - 2 < self.answer_start:
            return
        self.renames.pop(source, None)
        self.renames[source] = token
        while len(self.renames) > self.most_renames:
            self.renames.pop(next(iter(self.renames)))
        self.originals = {new: old for old, new in self.renames.items()}

    # --- the n-gram index ----------------------------------------------------------------------

    def _rebuild(self, tokens: list[int]) -> None:
        self.tokens, self.last_end = [], {}
        self.copy: int | None = None     # the source position of the last token, while copying
        self.lost: int | None = None     # the copy position before the last miss
        self.lost_at = -1                # the sequence position of that miss
        self.streak = 0                  # tokens copied since the copy position was found
        self.renames: dict[int, int] = {}    # source token -> what the answer writes for it
        self.originals: dict[int, int] = {}  # the inverse
        for token in tokens:
            self.append(token)

    def _matched_end(self) -> int | None:
        tokens = self.tokens
        for size in range(min(self.largest, len(tokens)), self.smallest - 1, -1):
            tail = tuple(tokens[-size:])
            end = self.last_end.get(tail)
            if end is None and self.originals:
                end = self.last_end.get(tuple(self.originals.get(token, token) for token in tail))
            if end is not None:
                return end
        return None
