"""A gang the policy's node count admits but a scenario's rescaled partition cannot hold never
holds that partition's capacity (found with a v2026 spot job list under `alibaba-peak`, whose
256 on-prem GPUs leave Ascend 205: one 32 x 8-GPU gang with no payable cloud held the whole
partition for the simulated year, and every job queued behind it never started)."""

from __future__ import annotations

from pathlib import Path

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
