"""`bench/scale.py --json` (issue 13, "a million-job queue"): a small run on both stores reports
every figure, the queue query's plan is an index range, and every role of `szb serve` came up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_run_reports_every_figure_on_both_stores(pg_server: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/scale.py"), "--jobs", "1500", "--checkpoints", "1000",
         "--batch", "400", "--settle", "1", "--json", "--dsn", pg_server],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["jobs"] == 1500
    for kind, roles in (("sqlite", ["all"]), ("postgres", ["all", "api", "scheduler"])):
        store = report[kind]
        assert store["jobs"] == 1500 and store["ingest_jobs_per_s"] > 0
        assert sorted(store["checkpoints"]) == ["1000", "1500"]
        for depth, figures in store["checkpoints"].items():
            # Below the dispatcher's window a full pass reads the whole queue.
            assert figures["pass_read_jobs"] == int(depth) and figures["pass_read_ms"] > 0
            for key in ("queue_first_page_ms", "queue_page_at_half_depth_ms", "queue_head_ms"):
                assert figures[key] > 0
            assert figures["recover_scan_ms"] >= 0 and figures["active_counts_ms"] >= 0
            assert {"list_jobs", "jobs_in_states"} <= set(figures["plans"])
            if kind == "sqlite":  # SQLite takes the (state, id) range however small the table;
                # PostgreSQL's choice on a small table follows its statistics (README).
                assert "USING COVERING INDEX jobs_state" in figures["plans"]["list_jobs"]["plan"]
                assert all(p["flat"] for p in figures["plans"].values())
        for role in roles:
            served = store[f"serve_{role}"]
            assert served["restart_to_serving_s"] > 0
            assert served["after_1s"]["rss_mb"] > 0
            if role != "scheduler":
                assert served["list_page_at_half_depth_ms"] > 0
