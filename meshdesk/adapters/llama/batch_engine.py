"""Continuous batching: the model host decodes every answer it is producing in one batch per step.

Each answer (`batch_sequence.Answer`) has its own sequence ("slot") in the KV cache, of the
host's per-answer context; the context holds `parallel` of them (llama.cpp's `n_seq_max`) in one
unified cache: a slot never holds more than `context` tokens, so they never take each other's room,
and llama.cpp decodes them as one micro-batch (a split cache cuts each step into one per slot,
each a trip across a split). One thread, `run`, owns the llama context.
Each step builds ONE `llama_batch`: the token each decoding answer sampled last, and then at
most `PROMPT_CHUNK` tokens of newcomers' prompts (first come, first evaluated), so a long prompt
holds the others back for one chunk's pass at most. One `llama_decode` evaluates it (on a split,
one trip across each member for everyone), and each answer whose row has logits samples its
next token with its own sampler: its seed, temperature, penalties and grammar. Answers join
between steps, up to `parallel`; the rest wait in arrival order. A finished answer leaves at
once, and its sequence's cache stays for the next prompt that shares its start
(`core.batch_slots`).

Speculation (a draft model's or prompt lookup's proposals, `speculative.py`) runs while an
answer decodes alone with nobody waiting: the step evaluates its last token and the proposals,
and it keeps sampling while its samples match them, as `SpeculativeLlama` does. With others in
the batch, batching wins: each step already carries their tokens, and verification rows would
make every one of them wait for one answer's guesses (docs/decisions.md, "Batching").
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections import deque

from meshdesk.adapters.llama.batch_sequence import Answer, node_gone
from meshdesk.adapters.llama.grammar_sampler import GrammarTooAmbiguous
from meshdesk.core.batch_slots import choose_slot

log = logging.getLogger(__name__)

# Prompt tokens evaluated per step, shared by the newcomers: one pass of 256 tokens of the bundled
# model takes ~0.2 s on this 2-core CPU, the longest a running stream pauses for a newcomer.
PROMPT_CHUNK = 256


class BatchEngine:
    def __init__(self, model, parallel: int, context: int, new_proposer=None):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.model = model
        self.llama = model.llama
        self.parallel = parallel
        self.context = context  # tokens per answer: prompt and answer together
        self.new_proposer = new_proposer  # () -> a speculative.Proposer for one answer, or None
        self.waiting: deque[Answer] = deque()
        self.active: dict[int, Answer] = {}  # by slot, in order of arrival
        self.remembered: dict[int, list[int]] = {slot: [] for slot in range(parallel)}
        self.changed = threading.Condition()
        draft_rows = (model.draft.draft_max + 1) if model.draft is not None else 1
        # A llama_decode takes at most n_batch tokens (llama-cpp-python caps it at n_ctx, which a
        # tiny context makes small): the chunk and a speculative pass stay within it.
        self.capacity = min(PROMPT_CHUNK + parallel + draft_rows, self.llama.n_batch)
        self.chunk = max(1, self.capacity - parallel - draft_rows)
        self.batch = llama_cpp.llama_batch_init(self.capacity, 0, 1)
        self.memory = llama_cpp.llama_get_memory(self.llama._ctx.ctx)
        self.steps = 0

    # -- from the connection threads

    def submit(self, answer: Answer) -> None:
        with self.changed:
            self.waiting.append(answer)
            self.changed.notify()

    def load(self) -> tuple[int, int]:
        """(answers decoding now, answers waiting for a sequence)."""
        with self.changed:
            return len(self.active), len(self.waiting)

    # -- the engine thread

    def run(self) -> None:
        try:
            while True:
                with self.changed:
                    while not self.waiting and not self.active:
                        self.changed.wait()
                    newcomers = self._take_waiting()
                for answer in newcomers:
                    self._admit_or_fail(answer)
                if self.active:
                    self.step()
        except BaseException:
            # Our mistake outside any one answer's work: nothing would ever answer again, and a
            # child that looks ready but is not is never restarted. Fail everyone, and exit so
            # that the node's supervisor starts a fresh child.
            log.exception("the batch engine failed")
            self._fail_everyone("the model host failed; it restarts")
            os._exit(1)

    def _fail_everyone(self, message: str) -> None:
        with self.changed:
            answers = [*self.active.values(), *self.waiting]
        for answer in answers:
            answer.fail("server", message)
            answer.done.set()

    def _admit_or_fail(self, answer: Answer) -> None:
        try:
            self._admit(answer)
        except Exception as error:  # this answer's sampler or grammar: its error alone
            log.exception("starting an answer failed")
            answer.fail("server", f"generation failed: {error}")
            if answer.slot >= 0:  # (slot -1 would be every sequence to llama_memory_seq_rm)
                self._leave(answer, keep_cache=False)
            answer.done.set()

    def _take_waiting(self) -> list[Answer]:
        room = self.parallel - len(self.active)
        taken = []
        while self.waiting and len(taken) < room:
            taken.append(self.waiting.popleft())
        return taken

    def _admit(self, answer: Answer) -> None:
        if node_gone(answer.connection):  # it gave up while it waited
            answer.done.set()
            return
        seeded = answer.request.seed is not None
        if seeded and not self.active:
            self._forget_cache()
        free = {slot: tokens for slot, tokens in self.remembered.items() if slot not in self.active}
        choice = choose_slot(free, answer.tokens, reuse=not seeded)
        self.llama_cpp.llama_memory_seq_rm(self.memory, choice.slot, choice.kept, -1)
        answer.slot, answer.evaluated = choice.slot, choice.kept
        answer.reused = choice.kept
        answer.sampler = sampler_for(self.llama, answer)
        if self.new_proposer is not None:
            answer.proposer = self.new_proposer(seeded)
        with self.changed:
            self.active[choice.slot] = answer

    def _forget_cache(self) -> None:
        """Empties the cache, so that a seeded answer decoding alone repeats exactly: in the unified
        cache, where its cells lie among other sequences' changes its logits (by up to half a logit
        here: the kernels sum in another order), and with them what its seed samples."""
        self.llama_cpp.llama_memory_clear(self.memory, True)
        self.remembered = {slot: [] for slot in range(self.parallel)}

    def step(self) -> None:
        """One llama_decode for every active answer, then a sample for each that has logits."""
        self._drop_abandoned_prompts()
        decoding = [answer for answer in self.active.values() if not answer.prefilling]
        alone = len(self.active) == 1 and decoding and not self.waiting
        if alone and decoding[0].proposer is not None:
            return self._speculative_step(decoding[0])
        rows = self._fill(decoding)
        if self.batch.n_tokens == 0 or not self._decode(rows):
            return
        width = len(self.active)
        for answer, count, row in rows:
            answer.evaluated_through(count)
            if row is None:
                continue
            answer.widest = max(answer.widest, width)
            token, complete = self._sample(answer, row)
            if token is None:
                continue
            if answer.sampled > 1:  # the first sample is the prompt pass's, not a decoding step's
                answer.count_step()
            if complete:
                self._finish(answer)

    def _drop_abandoned_prompts(self) -> None:
        """An answer still reading its prompt whose node went away leaves now, not after the rest
        of its prompt (an agent's 12k tokens are ~47 chunks) and 16 more tokens."""
        for answer in [answer for answer in self.active.values() if answer.prefilling]:
            if node_gone(answer.connection):
                answer.cancelled = True
                self._leave(answer, keep_cache=True)

    def _fill(self, decoding: list[Answer]) -> list[tuple[Answer, int, int | None]]:
        """The batch: each decoding answer's last token, then prompt chunks. Returns (answer,
        tokens it put in, the row whose logits it samples from or None)."""
        self.batch.n_tokens = 0
        rows = [(answer, 1, self._put(answer, answer.next_inputs(), logits_last=True)) for answer in decoding]
        room = self.chunk
        for answer in self.active.values():
            if not answer.prefilling or room == 0:
                continue
            chunk = answer.prompt_chunk(room)
            last = answer.evaluated + len(chunk) == len(answer.tokens)
            rows.append((answer, len(chunk), self._put(answer, chunk, logits_last=last)))
            room -= len(chunk)
        return rows

    def _put(self, answer: Answer, tokens: list[int], logits_last: bool, logits_all: bool = False) -> int | None:
        """Adds `tokens` of `answer` at its next positions; the row of its last token when that
        row has logits."""
        batch, start = self.batch, self.batch.n_tokens
        for offset, token in enumerate(tokens):
            row = start + offset
            batch.token[row] = token
            batch.pos[row] = answer.evaluated + offset
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = answer.slot
            batch.logits[row] = logits_all or (logits_last and offset == len(tokens) - 1)
        batch.n_tokens = start + len(tokens)
        return start + len(tokens) - 1 if logits_last or logits_all else None

    def _decode(self, rows) -> bool:
        self.steps += 1
        code = self.llama_cpp.llama_decode(self.llama._ctx.ctx, self.batch)
        if code == 0:
            return True
        log.error("llama_decode returned %s for %d answers", code, len(rows))
        for answer in {id(row[0]): row[0] for row in rows}.values():
            answer.fail("server", f"generation failed: llama_decode returned {code}")
            self._leave(answer, keep_cache=False)
        return False

    def _sample(self, answer: Answer, row: int) -> tuple[int | None, bool]:
        """`answer`'s next token from `row`'s logits, and whether that completes it. (None, True)
        when sampling failed: the answer has had its error and left; the others go on."""
        try:
            token = answer.sampler.sample(self.llama._ctx, row)
            return token, answer.take(token)
        except GrammarTooAmbiguous as error:
            answer.fail("request", str(error))
        except Exception as error:  # our mistake, for this answer alone
            log.exception("sampling failed")
            answer.fail("server", f"generation failed: {error}")
        self._leave(answer, keep_cache=False)
        return None, True

    def _speculative_step(self, answer: Answer) -> None:
        """Its last token and the proposals in one pass; it keeps the samples that match."""
        base = len(answer.tokens)
        room = min(answer.budget - 1, self.context - base - 1, self.capacity - 1)
        try:
            proposals, held_back = answer.proposals(room)
        except Exception:  # the draft model failed: this answer goes on without speculation
            log.exception("proposing tokens failed; speculation is off for this answer")
            answer.proposer = None
            return
        self.batch.n_tokens = 0
        self._put(answer, [answer.tokens[-1], *proposals], logits_last=True, logits_all=True)
        if not self._decode([(answer, 0, None)]):
            return
        answer.widest = max(answer.widest, 1)
        sampled = accepted = 0
        complete = False
        for row in range(len(proposals) + 1):
            token, complete = self._sample(answer, row)
            if token is None:
                return
            sampled += 1
            answer.proposer.observe(base + row, token)
            if complete or row == len(proposals) or token != proposals[row]:
                break
            accepted += 1
        answer.count_step(proposed=min(sampled, len(proposals)), accepted=accepted,
                          generated=sampled, held_back=held_back)
        if complete:
            return self._finish(answer)
        answer.evaluated_through(1 + accepted)
        # The rejected proposals' rows are in the cache: the next pass starts where they did.
        self.llama_cpp.llama_memory_seq_rm(self.memory, answer.slot, answer.evaluated, -1)

    def _finish(self, answer: Answer) -> None:
        try:
            answer.finish(self.model.speculation if self.model.draft is not None else None)
        except Exception as error:
            log.exception("finishing an answer failed")
            answer.fail("server", f"generation failed: {error}")
        self._leave(answer, keep_cache=True)  # cancelled too: what it evaluated is a valid prefix

    def _leave(self, answer: Answer, keep_cache: bool) -> None:
        with self.changed:
            self.active.pop(answer.slot, None)
        if keep_cache:
            self.remembered[answer.slot] = answer.tokens[:answer.evaluated]
        else:
            self.remembered[answer.slot] = []
            self.llama_cpp.llama_memory_seq_rm(self.memory, answer.slot, 0, -1)
        answer.done.set()


def sampler_for(llama, answer: Answer):
    """The chain llama-cpp-python's create_completion builds for this request."""
    import random

    request = answer.request
    llama.set_seed(request.seed if request.seed is not None else random.randrange(2 ** 32))
    return llama._init_sampler(
        top_k=40, top_p=request.top_p, min_p=0.05, typical_p=1.0, temp=request.temperature,
        repeat_penalty=1.0, frequency_penalty=request.frequency_penalty,
        presence_penalty=request.presence_penalty, grammar=answer.prompt.grammar)
