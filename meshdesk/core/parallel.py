"""How many answers a model host decodes at once by default, and how long a turned-away client
should wait before trying again.

Each parallel sequence has its own `context` tokens of the (unified) KV cache, so N sequences need the
weights (x FIT_MARGIN, as the planner counts them) plus N x context x bytes per token. The default
is the most that fits in the memory this node offers, at least one (a host that was chosen to run
the model runs it) and at most DEFAULT_MOST_PARALLEL: past that a 2-core CPU gains nothing
(bench/concurrency.py) and a GPU-less friend's memory is better left to the rest of the machine.
"""

from __future__ import annotations

import math

from meshdesk.core.planning import FIT_MARGIN

DEFAULT_MOST_PARALLEL = 8
WAITING_PER_SEQUENCE = 4  # the queue holds 4 answers' turns per sequence, then says "busy"
LEAST_RETRY_SECONDS, MOST_RETRY_SECONDS = 1, 60


def default_parallel(memory_bytes: int, model_bytes: int, kv_bytes_per_token: int | None, context: int,
                     most: int = DEFAULT_MOST_PARALLEL) -> int:
    """Sequences of `context` tokens whose KV caches fit in `memory_bytes` beside the weights.
    An unknown KV size (`None` or 0: an old advert) gives one sequence: nothing says more fit."""
    if not kv_bytes_per_token or kv_bytes_per_token < 0 or context <= 0:
        return 1
    spare = memory_bytes - model_bytes * FIT_MARGIN
    fitting = int(spare // (kv_bytes_per_token * context)) if spare > 0 else 0
    return max(1, min(most, fitting))


def most_waiting(parallel: int) -> int:
    """How many answers may wait for a sequence before the next is turned away with a 429: enough
    for a few agents' bursts, few enough that the last one waits a handful of answers, not forever."""
    return WAITING_PER_SEQUENCE * max(1, parallel)


def retry_after_seconds(answer_seconds: float | None, waiting: int, parallel: int) -> int:
    """A turned-away client's wait: the queue ahead of it drains `parallel` answers at a time, each
    taking about `answer_seconds` (the recent average; unknown before the first answer: 1 s each)."""
    each = answer_seconds if answer_seconds is not None and answer_seconds > 0 else 1.0
    rounds = math.ceil((waiting + 1) / max(1, parallel))
    return max(LEAST_RETRY_SECONDS, min(MOST_RETRY_SECONDS, math.ceil(each * rounds)))
