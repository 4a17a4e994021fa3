"""`bench/wait_model_frontier.py` (the README's wait-model figure and its row) runs, reports and draws."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.sim.conftest import run_bench


def frontier(*args: str) -> subprocess.CompletedProcess[str]:
    return run_bench("wait_model_frontier", *args, timeout=600)


def test_both_models_are_measured_against_the_references_and_drawn(tmp_path: Path) -> None:
    out = frontier("--json", "--jobs", "400", "--out", str(tmp_path / "fig" / "wait.png"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["lower_bound_cost"] <= report["offline_cost"]  # the bound is below every feasible schedule
    points = report["points"]
    assert [p["model"] for p in points] == ["fluid"] * 4 + ["projected"] * 4
    assert [p["knob"] for p in points[4:]] == [f"late_wait_factor={f}" for f in (1.0, 1.5, 4.0, 8.0)]
    for p in points:
        assert 0 <= p["slo"] <= 1 and p["cost"] > 0
        assert p["offline_ratio"] == round(p["cost"] / report["offline_cost"], 3)
        assert p["late_finish_jobs"] >= p["late_jobs"]  # a job started late also ends late
        if p["late_jobs"] == 0:  # every job on time: no cheaper than the bound of every job on time
            assert p["cost"] >= report["lower_bound_cost"] - 0.01
    assert (tmp_path / "fig" / "wait.png").stat().st_size > 1000


def test_a_sample_of_no_jobs_is_refused_in_one_line() -> None:
    out = frontier("--jobs", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--jobs: must be >= 1, got 0" in out.stderr
