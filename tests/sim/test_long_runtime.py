"""A trace job running longer than a job spec's 90-day runtime limit is simulated as 90 days (its
estimate must pass validation); `szb simulate` said nothing, so a 3,000-day run cost 90 days' worth
in every strategy, the bound and the offline schedule, and the figures read as the trace's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "configs" / "policy-sim.yaml"

TRACE = """submit_time,runtime,accelerator,count,tenant
0,3000d,A800,1,pku-nlp
10,1h,A800,1,pku-nlp
"""


def test_a_run_cut_to_the_runtime_limit_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    argv = ["simulate", "--trace", str(trace), "--policy", str(POLICY)]
    assert main([*argv, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime_capped"] == 1
    assert main([*argv, "--report", str(tmp_path / "rep")]) == 0
    said = "1 job ran longer than 90 days (the longest runtime a job spec accepts): simulated as 90 days"
    assert said in " ".join(capsys.readouterr().out.split())
    assert said in (tmp_path / "rep" / "summary.md").read_text()
