"""The benchmarks still run (quick modes): a broken bench is found here, not when someone needs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script, verdict", [
    ("transport.py", "tls / raw tcp ="),
    ("api_overhead.py", "ratio (api / in-process) ="),
    ("gui_latency.py", "longest stall "),
    ("speculative.py", "n-gram / off tok/s on code edits at 20 ms ="),
    ("split.py", "MeshDesk / direct RPC tokens/s ="),
    ("latency.py", "round trips per token per remote member ="),
    ("churn.py", "SIGKILL of a peer -> removal from every view"),
    ("grammar.py", "grammar-constrained / free tokens/s ="),
    ("first_answers.py", "tok/s smollm2 / gemma-3-270m ="),
    ("concurrency.py", "one batched llama_decode of 8 / 8 single ones:"),
    ("batch_split.py", "round trips per generated token per remote member at"),
    ("nat_paths.py", "relayed / direct split tok/s ="),
])
def test_bench_quick_mode_prints_its_verdict(script, verdict):
    result = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert verdict in result.stdout
