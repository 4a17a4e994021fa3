"""A few thousand hostile requests against a real `szb serve` (issue 10, observation 3).

Random bytes, mutated requests and out-of-range fields to every RPC, through a real channel
with identity serializers: never INTERNAL or UNKNOWN, never a traceback in the broker's log,
and the 40 jobs stored before read back intact afterwards. `bench/fuzz.py --n 20000` is the
same run, larger.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.fuzz import run
from tests.brokerproc import ROOT


def test_hostile_requests_get_no_internal_or_unknown_and_lose_nothing() -> None:
    result = run(3000, seed=11)
    assert result["requests"] == 3000
    assert (result["internal"], result["unknown"], result["crashes"]) == (0, 0, 0), result["failures"]
    assert result["tracebacks"] == 0
    assert result["intact"] == "40/40"
    assert result["codes"]["INVALID_ARGUMENT"] > 1000  # most cases really were bad input


def test_the_bench_command_prints_the_documented_figures() -> None:
    out = subprocess.run(
        [sys.executable, "bench/fuzz.py", "--n", "200", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    figures = json.loads(out)
    assert {"requests", "internal", "unknown", "crashes", "rss_growth_mb"} <= set(figures)
    assert figures["requests"] == 200 and figures["internal"] == 0 and figures["unknown"] == 0
