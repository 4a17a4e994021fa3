"""A gang the policy's node count admits but a scenario's rescaled partition cannot hold never
holds that partition's capacity (found with a v2026 spot job list under `alibaba-peak`, whose
256 on-prem GPUs leave Ascend 205: one 32 x 8-GPU gang with no payable cloud held the whole
partition for the simulated year, and every job queued behind it never started)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from broker.policy import load_policy
from broker.sim.jobs import build_jobs
from broker.sim.metrics import late
from broker.sim.run import simulate
from broker.sim.scenario import load_scenario
from broker.sim.traces import TraceJob

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_a_gang_too_big_for_the_simulated_partition_holds_nothing_back() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/alibaba-peak.yaml")
    trace = [
        TraceJob("big", 0.0, 3000.0, count=8, tenant="sg-partner", nodes=24),
        TraceJob("huge", 10.0, 32311.0, count=8, tenant="pku-nlp", nodes=32, priority="low"),
        TraceJob("after", 20.0, 17581.0, count=8, tenant="sg-partner", nodes=4, priority="low"),
    ]
    jobs = build_jobs(trace, policy, scenario)
    sim = simulate(policy, jobs, scenario, baselines=("onprem-only",), lower_bound=True)
    for name in ("policy", "onprem-only"):
        big, huge, after = sim.runs[name].records
        assert not late(big) and not late(after), name  # it used to never start, behind `huge`
        assert late(huge), name  # 256 GPUs fit no simulated partition, and no budget pays the cloud
    assert sim.result["offline_cost"] is not None


def test_the_bound_gives_no_onprem_option_to_a_gang_too_big_for_the_simulated_partition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--onprem-gpus 16` leaves Ascend too few accelerators for the 4 x 8 gang: no strategy and not
    # the offline schedule starts it, so the bound must not price it on-prem (it read 16.0 > 9.6).
    from broker.commands import simulate as cmd

    trace = tmp_path / "gang.csv"
    trace.write_text(
        "submit_time,runtime,accelerator,count,nodes,tenant,max_wait\n"
        "0,600,Ascend910B,8,4,pku-nlp,2h\n0,3600,Ascend910B,8,1,pku-nlp,2h\n"
    )
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    policy = str(CONFIGS / "policy-sim.yaml")
    args = parser.parse_args(
        ["simulate", "--trace", str(trace), "--policy", policy, "--onprem-gpus", "16", "--output", "json"]
    )
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["offline"]["unplaced"] == 1 and out["offline"]["late_jobs"] == 0
    assert out["strategies"]["policy"]["never_started"] == 1
    assert out["lower_bound_cost"] <= out["offline_cost"] + 1e-6
    assert out["lower_bound_cost"] == pytest.approx(out["offline_cost"], abs=0.01)
    assert out["cost_ratio"] == pytest.approx(1.0, abs=0.01)
