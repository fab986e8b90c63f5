"""One answer the batching model host is producing: its tokens, sampler, text and connection.

`Answer` is what `batch_engine.BatchEngine` keeps per request, in its own KV cache sequence
(`slot`). Its prompt is evaluated in chunks (`prompt_chunk`); then each step evaluates the token
sampled last (`next_inputs`) and samples the next one from that row's logits (`take`). The text,
stops and finish are `answer_text.AnswerText`'s; this adds the budget, the chat template's
stopping criteria, the per-answer speculation counts and the node's connection.

Everything here runs on the engine's thread, which alone touches the llama context.
"""

from __future__ import annotations

import json
import select
import socket
import threading

import numpy as np

from meshdesk.adapters.llama.answer_text import AnswerText
from meshdesk.adapters.llama.speculative import SpeculationStats

GONE_CHECK_TOKENS = 16  # how often an answer asks whether its node still waits (one recv)


def send_line(connection: socket.socket, payload: dict) -> None:
    connection.sendall(json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n")


def node_gone(connection: socket.socket) -> bool:
    """Whether the node closed the connection (it stopped waiting). It never blocks, and leaves
    the socket's mode alone (the engine's sends keep their timeout): a socket with a timeout
    waits for data in `recv` whatever the flags, so it is asked first whether any is there."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class Answer:
    def __init__(self, connection: socket.socket, request, prompt, text: AnswerText, budget: int,
                 sampler, proposer=None):
        self.connection = connection
        self.request = request
        self.prompt = prompt
        self.text = text
        self.budget = budget        # tokens it may still sample
        self.sampler = sampler      # a LlamaSampler (or GrammarFirstSampler): sample(ctx, row)
        self.proposer = proposer    # speculative.Proposer while it decodes alone, or None
        self.stats = SpeculationStats()
        self.slot = -1
        self.tokens: list[int] = list(prompt.tokens)  # the sequence: prompt, then sampled tokens
        self.evaluated = 0          # of `tokens`, how many the KV cache holds
        self.sampled = 0
        self.reused = 0             # prompt tokens its sequence's cache already held
        self.widest = 0             # the most answers one of its steps decoded together
        self.cancelled = False
        self.done = threading.Event()  # set once it has left the engine, whatever the reason

    @property
    def prefilling(self) -> bool:
        return self.evaluated < len(self.tokens) - 1 or not self.sampled and self.evaluated < len(self.tokens)

    def prompt_chunk(self, most: int) -> list[int]:
        """The next of its prompt's tokens to evaluate, at most `most`."""
        return self.tokens[self.evaluated:self.evaluated + most]

    def next_inputs(self) -> list[int]:
        return self.tokens[self.evaluated:]  # while decoding, the one token sampled last

    def proposals(self, most: int) -> tuple[list[int], bool]:
        """Its proposer's guesses at the next tokens (at most `most`), and whether it held back."""
        proposed = self.proposer(np.array(self.tokens, dtype=np.intc))
        pending = getattr(self.proposer, "pending", None)
        return [int(token) for token in proposed][:max(0, most)], bool(pending is not None and pending.held_back)

    def evaluated_through(self, count: int) -> None:
        self.evaluated += count

    def take(self, token: int) -> bool:
        """A token sampled for it: streams its text; True when the answer is complete."""
        before = np.array(self.tokens, dtype=np.intc)  # as llama-cpp-python: not the new token
        self.tokens.append(token)
        self.sampled += 1
        self.budget -= 1
        delta, ended = self.text.add(token)
        self.send_delta(delta)
        if not ended and any(criterion(before, None) for criterion in self.prompt.stopping_criteria):
            ended = True
        if not ended and self.sampled % GONE_CHECK_TOKENS == 0 and node_gone(self.connection):
            self.cancelled = True
        return ended or self.budget <= 0 or self.cancelled

    def send_delta(self, text: str) -> None:
        if not text or self.cancelled:
            return
        try:
            send_line(self.connection, {"type": "delta", "text": text})
        except OSError:
            self.cancelled = True

    def count_step(self, proposed: int = 0, accepted: int = 0, generated: int = 1, held_back: bool = False) -> None:
        self.stats.steps += 1
        self.stats.proposed += proposed
        self.stats.accepted += accepted
        self.stats.generated += generated
        if held_back:
            self.stats.backed_off += generated

    def finish(self, speculation: str | None) -> None:
        """Sends the last text and the finish event (unless the node went away)."""
        tail, finish = self.text.close(None if self.text.ended else "length" if self.budget <= 0 else "stop")
        self.send_delta(tail)
        if self.cancelled:
            return
        if speculation is not None:
            finish["speculative"] = self.stats.to_dict() | {"mode": speculation}
        finish["batch"] = {"widest": self.widest, "reused": self.reused}
        self.send_event({"type": "finish", **finish})

    def fail(self, kind: str, message: str) -> None:
        self.send_event({"type": "error", "kind": kind, "message": message})

    def send_event(self, payload: dict) -> None:
        try:
            send_line(self.connection, payload)
        except OSError:
            self.cancelled = True
