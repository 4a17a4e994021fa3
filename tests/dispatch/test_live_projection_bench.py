"""`bench/live_projection.py` (the README's figures for the live projected wait) runs and reports."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.brokerproc import ROOT


def test_the_live_projection_bench_runs() -> None:
    out = subprocess.run(
        [sys.executable, "bench/live_projection.py", "--depths", "50", "200", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["running_jobs"] == 1000
    assert [r["depth"] for r in body["rows"]] == [50, 200]
    assert all(r["per_decision_us_p50"] > 0 for r in body["rows"])
