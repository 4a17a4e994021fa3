"""Where no schedule starts every job on time the offline reference starts some late too; the
table's footer and summary.md gave its cost and ratio as if it were on time (a policy ratio of
0.81 "against the offline schedule" with 37 of its jobs late went unexplained)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli import main
from tests.sim.conftest import tiny_policy


def test_the_offline_schedules_late_jobs_are_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_policy(tmp_path, gpus=4)
    trace = tmp_path / "trace.csv"  # 6 4-GPU jobs at once on 4 GPUs, none may wait, no 4-GPU instance
    trace.write_text("submit_time,runtime,accelerator,count,tenant,max_wait\n" + "0,1h,A800,4,t1,0\n" * 6)
    argv = ["simulate", "--trace", str(trace), "--policy", str(tmp_path / "policy.yaml")]
    assert main([*argv, "-o", "json"]) == 0
    late = json.loads(capsys.readouterr().out)["offline"]["late_jobs"]
    assert late == 5
    assert main([*argv, "--report", str(tmp_path / "rep")]) == 0
    footer = " ".join(capsys.readouterr().out.split())
    assert "offline schedule 48.00 CNY (5 jobs late), ratio" in footer, footer
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "6 jobs on-prem, 0 in the cloud, 5 late" in summary, summary
