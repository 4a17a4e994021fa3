"""`bench/decision_quality.py` on inputs other than the bundled ones: a mistyped flag is one line,
not a traceback, and a trace no schedule can run all on time still reports the targets it can
measure (they read `null`, as for the policy-only synthetic run, hiding an offline_ratio missed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.sim.conftest import run_bench, tiny_policy


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return run_bench("decision_quality", "--json", *args)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--only", "alibaba-peek"], "invalid choice: 'alibaba-peek'"),
        (["--only", "alibaba-peak", "--policy", "nowhere.yaml"], "nowhere.yaml"),
        (["--only", "alibaba-peak", "--burst", "wait_model=bogus"], "wait_model=bogus: burst.wait_model"),
        # Said with the flag: at a line of the re-dumped policy it pointed at a comment elsewhere.
        (["--only", "alibaba-peak", "--burst", "late_wait_factor=x"], "--burst late_wait_factor=x: burst."),
        (["--only", "alibaba-peak", "--burst", "lateness=2"], "--burst lateness=2: burst.lateness: unknown"),
        (["--only", "alibaba-peak", "--burst", "late_wait_factor"], "late_wait_factor: expected KEY=VALUE"),
    ],
)
def test_a_bad_flag_is_one_clear_line(args: list[str], said: str) -> None:
    out = bench(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr and said in out.stderr, out.stderr


def test_targets_without_a_bound_still_judge_the_offline_ratio(tmp_path: Path) -> None:
    tiny_policy(tmp_path, gpus=4)
    trace = tmp_path / "trace.csv"  # 70 4-GPU jobs at once on 256 GPUs, none may wait, no 4-GPU instance
    trace.write_text("submit_time,runtime,accelerator,count,tenant,max_wait\n" + "0,1h,A800,4,t1,0\n" * 70)
    out = bench("--only", "alibaba-peak", "--policy", str(tmp_path / "policy.yaml"), "--trace", str(trace))
    assert out.returncode == 0, out.stderr
    # The scenario's per-site worlds (stock-outs, delays) name sites this policy lacks: said once.
    said = "alibaba-peak: the scenario's worlds of aliyun-cn-beijing, aws-us-east-1 are unused"
    assert said in out.stderr, out.stderr
    (result,) = json.loads(out.stdout)["results"]
    assert result["lower_bound_cost"] is None and result["offline_ratio"] is not None
    slo = result["strategies"]["policy"]["slo_attainment"]
    assert slo < 0.97
    targets = result["targets"]
    assert targets["offline_ratio"] == {"value": result["offline_ratio"], "slo": slo, "met": False}
    assert targets["cost_ratio"]["value"] is None and targets["cost_ratio"]["met"] is None
    assert targets["cost_ratio"]["why"] == "no bound: no schedule starts every job on time"
    assert targets["spot_over_restart_limit"]["met"] is True


def test_a_cost_ratio_below_the_bound_is_not_judged_met(tmp_path: Path) -> None:
    """The bound starts every job on time; a policy that ran jobs late can cost less than it. A
    ratio under 1 measures the lateness, not the decisions: it was judged `met` (0.63 <= 1.20)."""
    tiny_policy(tmp_path, gpus=8)
    trace = tmp_path / "trace.csv"  # 300 1-GPU jobs at once on 256 GPUs: 44 must burst to be on time
    trace.write_text("submit_time,runtime,accelerator,count,tenant,max_wait\n" + "0,2h,A800,1,t1,30m\n" * 300)
    policy = str(tmp_path / "policy.yaml")
    # A fluid wait estimate far too short keeps them waiting at home, late.
    knobs = ("--burst", "wait_model=fluid", "wait_estimate_factor=0.01")
    out = bench("--only", "alibaba-peak", "--policy", policy, "--trace", str(trace), *knobs)
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)["results"]
    late = result["strategies"]["policy"]["late_jobs"]
    assert late > 0 and result["cost_ratio"] < 1
    target = result["targets"]["cost_ratio"]
    assert target["value"] == result["cost_ratio"] and target["met"] is None
    assert target["why"] == result["cost_ratio_note"], target
    assert f"the policy did not for {late} (refused, started late or never" in target["why"], target


def test_the_table_counts_the_refused_jobs(tmp_path: Path) -> None:
    """The table's `jobs` leaves refused jobs out (as cost and SLO do): a trace of 3 jobs, 2 of
    them larger than anything on offer, read "jobs 1 ... SLO 1.000, all met", the 2 unsaid."""
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "submit_time,runtime,accelerator,count,tenant\n"
        "0,2h,A800,64,pku-nlp\n10,2h,A800,1000,pku-nlp\n20,2h,,1,pku-nlp\n"
    )
    out = run_bench("decision_quality", "--only", "alibaba-peak", "--trace", str(trace))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    row = next(line.split() for line in lines if line.split()[:2] == ["alibaba-peak", "policy"])
    assert (row[header.index("jobs")], row[header.index("refused")]) == ("1", "2"), out.stdout
