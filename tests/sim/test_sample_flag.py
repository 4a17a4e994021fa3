"""`szb simulate --jobs N` as a user types it: a sample says it is one, in every output form.

The flag replays the first N jobs of the workload for a quick look; its figures are not the
whole workload's, so the table says so (not only the JSON), and an N at or above the
workload's size replays everything and does not claim a sample.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.brokerproc import ROOT

POLICY = str(ROOT / "configs" / "policy-sim.yaml")


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "simulate", "--policy", POLICY, "--no-lower-bound", *args],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_table_of_a_sample_says_it_is_one() -> None:
    out = simulate("--synthetic", "40", "--jobs", "7")
    assert out.returncode == 0, out.stderr
    assert "A sample: the first 7 of 40 jobs" in out.stdout, out.stdout
    whole = simulate("--synthetic", "40")
    assert whole.returncode == 0, whole.stderr
    assert "sample" not in whole.stdout


def test_a_sample_with_a_scenario_names_its_size_in_json_and_the_report(tmp_path: Path) -> None:
    scenario = str(ROOT / "configs" / "scenarios" / "flood.yaml")
    report = tmp_path / "report"
    out = simulate(
        "--synthetic",
        "30",
        "--jobs",
        "5",
        "--scenario",
        scenario,
        "--output",
        "json",
        "--report",
        str(report),
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["scenario"] == "flood"
    assert (body["jobs_sampled"], body["sample_of"]) == (5, 30)
    s = body["strategies"]["policy"]
    assert s["jobs"] + s["rejected"] == 5
    assert "A sample: the first 5 of 30 jobs" in (report / "summary.md").read_text()


def test_n_at_or_above_the_workload_replays_it_all_and_claims_no_sample() -> None:
    for n in ("30", "100"):
        out = simulate("--synthetic", "30", "--jobs", n, "--output", "json")
        assert out.returncode == 0, out.stderr
        body = json.loads(out.stdout)
        assert "jobs_sampled" not in body and "sample_of" not in body, body.get("jobs_sampled")
        s = body["strategies"]["policy"]
        assert s["jobs"] + s["rejected"] == 30
        if n == "100":
            assert "--jobs 100" in out.stderr and "30 jobs" in out.stderr, out.stderr
        table = simulate("--synthetic", "30", "--jobs", n)
        assert table.returncode == 0 and "sample" not in table.stdout


def test_zero_or_negative_n_is_refused_in_one_line() -> None:
    for n in ("0", "-3"):
        out = simulate("--synthetic", "30", "--jobs", n)
        assert out.returncode == 2  # (a usage error, as the README has them; it was 1)
        assert out.stderr.strip().endswith(f"error: argument --jobs: must be >= 1, got {n}"), out.stderr
