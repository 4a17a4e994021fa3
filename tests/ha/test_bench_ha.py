"""`bench/ha.py` keeps working: a short run (two SIGKILLs) reports every figure; the README's
figures come from the full two-minute run and are never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.brokerproc import ROOT


def test_a_short_bench_run_reports_takeovers_and_counts(pg_server: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "bench/ha.py",
            "--duration",
            "10",
            "--kill-every",
            "5",
            "--rate",
            "2",
            "--burst",
            "5",
            "--drain",
            "60",
            "--json",
        ],
        cwd=ROOT,
        env={**os.environ, "SZB_PG_DSN": pg_server, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.stdout.strip(), out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["kills"] == 2 and len(result["takeover_s"]) == 2
    assert result["acknowledged"] > 0 and result["lost_acknowledged"] == 0
    for key in (
        "takeover_p99_s",
        "double_dispatch",
        "leaked_instances",
        "deposed_backend_calls",
        "unfinished",
    ):
        assert key in result
