"""First impressions: each bundled model's answers to a new user's first prompts, through a real
node (`meshdesk --headless` in its own home), with tokens per second.

    .venv/bin/python bench/first_answers.py [--threads N] [--max-tokens N] [--quick]

--quick (the test suite's): one prompt, 8 tokens, so the bench is known to still run.

Greedy decoding (temperature 0), so a rerun gives the same words; tok/s is completion tokens
over the request's wall time (prompt processing included), as a user waits for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nodes import start_node  # noqa: E402

PROMPTS = ("Say hi.", "What can you do?", "Write a haiku about friends sharing computers.")
MODELS = ("smollm2", "gemma-3-270m")


def seeded_home(folder: Path, model: str) -> Path:
    """A home whose models folder has the bundled file, as a first start leaves it."""
    from meshdesk.app.model_choice import choose_model

    home = folder / model
    chosen = choose_model(model, home / "models")
    assert chosen.path.is_file()
    return home


def ask(node, model_id: str, prompt: str, max_tokens: int) -> tuple[str, int, float]:
    client = node.client()
    started = time.perf_counter()
    answer = client.chat.completions.create(model=model_id, max_tokens=max_tokens, temperature=0,
                                            messages=[{"role": "user", "content": prompt}])
    seconds = time.perf_counter() - started
    return answer.choices[0].message.content, answer.usage.completion_tokens, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--node-option", action="append", default=[], help="passed to each node")
    parser.add_argument("--quick", action="store_true", help="one prompt, 8 tokens (the test suite's smoke run)")
    options = parser.parse_args()
    prompts = PROMPTS[:1] if options.quick else PROMPTS
    max_tokens = 8 if options.quick else options.max_tokens
    speeds: dict[str, list[float]] = {}
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="meshdesk-first-answers-") as folder:
        for model in options.models:
            node = start_node(seeded_home(Path(folder), model), "--model", model, "--threads", str(options.threads),
                              *options.node_option)
            try:
                node.wait_until_ready(timeout=300)
                model_id = node.client().models.list().data[0].id
                ask(node, model_id, "Hello", 1)  # warm-up: the first request pays for loading
                for prompt in prompts:
                    text, tokens, seconds = ask(node, model_id, prompt, max_tokens)
                    speeds.setdefault(model, []).append(tokens / seconds)
                    print(f"| {model_id} | {prompt} | {' '.join(text.split())} | {tokens} | "
                          f"{tokens / seconds:.1f} |", flush=True)
            finally:
                node.stop()
    if len(speeds) >= 2:
        (first, first_speeds), (second, second_speeds) = list(speeds.items())[:2]
        ratio = (sum(first_speeds) / len(first_speeds)) / (sum(second_speeds) / len(second_speeds))
        print(f"tok/s {first} / {second} = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
