"""A child for tests/test_ngram_split.py: greedy tokens of a plain `Llama` and of one verifying
prompt-lookup proposals, both split onto rpc devices, compared up to a near tie.

Run in its own process (`python -m tests.ngram_split_check MODEL ENDPOINT...`) because the rpc
devices it registers stay registered for the life of the process. Prints one JSON line per
prompt: tokens compared of how many, the margin at a fork (None when none), and the counts.
An `AssertionError` (a fork at a clear margin) exits non-zero with its message.
"""

from __future__ import annotations

import json
import sys


def main(model: str, endpoints: list[str]) -> None:
    import llama_cpp

    from meshdesk.adapters.llama.common import register_rpc_servers
    from meshdesk.adapters.llama.prompt_lookup_draft import PromptLookupDraft
    from meshdesk.adapters.llama.speculative import SpeculativeLlama
    from tests.test_ngram_speculation import MAX_TOKENS, PROSE, REPEATING
    from tests.test_speculative import NEAR_TIE, compared_until_a_near_tie, greedy

    register_rpc_servers(endpoints)
    options = dict(n_ctx=1024, n_threads=1, n_threads_batch=1, n_gpu_layers=-1,
                   tensor_split=[1.0] * len(endpoints), verbose=False)
    plain = llama_cpp.Llama(model_path=model, **options)
    main_model = SpeculativeLlama(model_path=model, **options)
    main_model.attach_draft(PromptLookupDraft(8, context=1024))
    for prompt in (*REPEATING, *PROSE):
        logits: list = []
        expected = greedy(plain, prompt, MAX_TOKENS, logits)
        main_model.speculation.begin()
        actual = greedy(main_model, prompt, len(expected))
        stats = main_model.speculation.finish()
        compared = compared_until_a_near_tie(expected, logits, actual)
        fork = None if compared == len(expected) else float(logits[compared][expected[compared]]
                                                             - logits[compared][actual[compared]])
        print(json.dumps({"prompt": prompt[:24], "compared": compared, "of": len(expected), "fork_margin": fork,
                          "near_tie": NEAR_TIE, **stats.to_dict()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
