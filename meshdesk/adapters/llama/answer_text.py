"""The text of one answer, token by token, for a host that samples the tokens itself.

llama-cpp-python's `create_completion` turns the tokens it samples into streamed text; a host
that decodes many answers in one batch (llama-cpp-python's low-level API) samples them itself,
and `AnswerText` does for each answer what `create_completion` and the one-at-a-time host did:

    answer = AnswerText(llama, prompt, request)
    delta, ended = answer.add(token)        # text to stream now ("" = nothing yet), per token
    tail, finish = answer.close(reason)     # the last text, and the finish event's fields

- End-of-generation tokens (every one the vocabulary has, not only EOS) end the answer and are
  not rendered.
- Stop strings (`Prompt.stop`) end it, cut before the stop; text that may be the start of one is
  held back until the next token tells. When one token completes several, the answer is cut at
  the first to begin, and the first of them in `Prompt.stop`'s order is the one named
  (`stop_sequence`, only when it is the client's own), as llama-cpp-python and the host did.
- UTF-8: the bytes of a character split across tokens wait until it is whole; bytes that can
  never make a character are dropped (llama-cpp-python's `errors="ignore"`).
- With tools offered, the control tokens that are a call's marker render as their text
  (`tool_output.marker_tokens`), and the text goes through `tool_output`: prose streams, calls
  go in the finish (`finish_reason` "tool_calls").
- Usage: the prompt as `Prompt.counted` tells, and the answer's streamed text tokenized again,
  the text of an answer carried on (`continue_from`) included, as if one host wrote it all.

Where this differs from llama-cpp-python, on purpose: it never drops a whole character. There,
the text held back at the end of an answer is decoded token by token, so a character split
across tokens just before end-of-generation or a stop (an emoji, often) was lost, and so was its
count in usage. And there an answer whose last allowed token left a character unfinished went on
past `max_tokens`; here the caller's budget is the limit, and the unfinished bytes are dropped.

Nothing here decodes or touches a socket: the model is asked only for thread-safe lookups
(`Vocabulary`), so answers can be rendered while the next batch decodes, and tests can give a
vocabulary of their own.
"""

from __future__ import annotations

import codecs
import operator
from dataclasses import dataclass
from typing import Callable

from meshdesk.adapters.llama.tool_output import PlainOutput, marker_tokens, output_for

FINISH_REASONS = (None, "stop", "length")


@dataclass(frozen=True)
class Vocabulary:
    """What an answer's text needs of the model: lookups only, never a decode."""

    size: int                              # token ids are 0 .. size - 1
    piece: Callable[[int, bool], bytes]    # one token's bytes; True: a control token as its text
    ends: Callable[[int], bool]            # an end-of-generation token (EOS, <|im_end|>, ...)
    count: Callable[[str], int]            # tokens in a text, special tokens parsed
    begin: int = -1                        # BOS: llama.cpp drops the space after a leading BOS
    markers: frozenset = frozenset()       # control tokens that are a tool call's marker


def vocabulary_of(llama) -> Vocabulary:
    """The `Vocabulary` of a loaded `llama_cpp.Llama`."""
    import llama_cpp

    vocab = llama._model.vocab
    return Vocabulary(
        size=llama.n_vocab(),
        piece=lambda token, special: llama.detokenize([token], special=special),
        ends=lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)),
        count=lambda text: len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)),
        begin=llama.token_bos(),
        markers=marker_tokens(llama),
    )


def client_stops(prompt, request) -> frozenset:
    """The stop strings that are the client's own (a template's are not named in the finish);
    under a grammar the client's are not in `prompt.stop` at all (see host.prompt_for)."""
    own = list(request.stop)
    return frozenset(own) if prompt.stop[:len(own)] == own else frozenset()


class AnswerText:
    """The streamed text and the finish of one answer (see the module docstring)."""

    def __init__(self, llama, prompt, request, vocabulary: Vocabulary | None = None):
        self.vocabulary = vocabulary or vocabulary_of(llama)
        self.output = output_for(request)
        self.kept = frozenset() if isinstance(self.output, PlainOutput) else self.vocabulary.markers
        # An empty stop would match before the first character: no answer could be written.
        self.stops = [stop.encode("utf-8") for stop in prompt.stop if stop]
        self.client_stops = client_stops(prompt, request)
        self.prompt_tokens = prompt.counted()
        self.carried = request.continue_from or ""
        self.text = bytearray()  # the answer so far, as llama.cpp renders its tokens
        self.sent = 0            # bytes of `text` handed to the decoder
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.streamed: list[str] = []  # the text streamed, before tool output splits it
        self.tokens = 0                # rendered (end-of-generation tokens are not)
        self.begins_with_bos = False
        self.stop: str | None = None   # the stop string that ended the answer
        self.ended = False             # by end-of-generation or a stop string
        self.closed = False

    def add(self, token) -> tuple[str, bool]:
        """The next sampled token: (text to stream now, whether the answer ended here)."""
        if self.ended or self.closed:
            raise ValueError("this answer has ended: it takes no more tokens")
        token = self._checked(token)
        if self.vocabulary.ends(token):
            self.ended = True
            return self._stream(len(self.text), final=True), True
        start = len(self.text)
        self._append(token)
        cut = self._stop_completed(start)
        if cut is not None:
            self.ended = True
            return self._stream(cut, final=True), True
        return self._stream(len(self.text) - self._held_for_stops(), final=False), False

    def close(self, finish_reason: str | None = None) -> tuple[str, dict]:
        """(the last text to stream, the finish event's fields). `finish_reason` is the caller's
        ("length": the budget ran out; None: `add` said the answer ended). An answer that ended
        itself finishes "stop" whatever the caller says: a stop is checked before the budget."""
        if finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be 'stop', 'length' or None, got {finish_reason!r}")
        if self.closed:
            raise ValueError("this answer is already closed")
        self.closed = True
        text = "" if self.ended else self._stream(len(self.text), final=True)
        tail, calls = self.output.finish()
        finish = {"finish_reason": "stop" if self.ended else finish_reason or "stop",
                  "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self._completion_tokens()}}
        if self.stop is not None and self.stop in self.client_stops:
            finish["stop_sequence"] = self.stop
        if calls:
            finish |= {"finish_reason": "tool_calls", "tool_calls": calls}
        return text + tail, finish

    def _checked(self, token) -> int:
        if isinstance(token, bool):
            raise ValueError(f"a token must be an integer id, got {token!r}")
        try:
            value = operator.index(token)
        except TypeError:
            raise ValueError(f"a token must be an integer id, got {token!r}") from None
        if not 0 <= value < self.vocabulary.size:
            raise ValueError(f"token {value} is not in this model's vocabulary "
                             f"(ids 0 to {self.vocabulary.size - 1})")
        return value

    def _append(self, token: int) -> None:
        piece = self.vocabulary.piece(token, token in self.kept)
        if self.tokens == 0:
            self.begins_with_bos = token == self.vocabulary.begin
        self.tokens += 1
        if self.begins_with_bos and not self.text:
            piece = piece.removeprefix(b" ")  # as llama.cpp's detokenize of the whole answer does
        self.text += piece

    def _stop_completed(self, start: int) -> int | None:
        """Where the answer is cut, when the bytes from `start` complete a stop string."""
        found = {}
        for stop in self.stops:
            # Nothing before `start` held a stop, so one found now ends in the new bytes.
            position = self.text.find(stop, max(0, start - len(stop) + 1))
            if position >= 0:
                found[stop] = position
        if not found:
            return None
        self.stop = next(iter(found)).decode("utf-8")
        return min(found.values())

    def _held_for_stops(self) -> int:
        """How many bytes at the end may be the start of a stop string, not streamed yet."""
        unsent = len(self.text) - self.sent
        longest = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, unsent), longest, -1):
                if self.text.endswith(stop[:length]):
                    longest = length
                    break
        return longest

    def _stream(self, end: int, final: bool) -> str:
        text = self.decoder.decode(bytes(self.text[self.sent:end]), final=final)
        self.sent = max(self.sent, end)
        if not text:
            return ""
        self.streamed.append(text)
        return self.output.feed(text)

    def _completion_tokens(self) -> int:
        text = self.carried + "".join(self.streamed)
        return self.vocabulary.count(text) if text else 0
