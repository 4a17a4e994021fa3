"""Fair share in the simulator (issue 14): hand-computed flood, and the per-tenant figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import load_policy
from broker.sim.fairness import jain, water_fill
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CONFIGS, POLICY


def test_water_fill_caps_and_weights() -> None:
    got = water_fill(10.0, {"a": 1, "b": 1, "c": 2}, {"a": 1.0, "b": 100.0, "c": 100.0})
    # a is capped at what it asked; b and c split the rest 1:2.
    assert got == pytest.approx({"a": 1.0, "b": 3.0, "c": 6.0})
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([3.0, 0.0, 0.0]) == pytest.approx(1 / 3)


def test_flooding_tenant_does_not_delay_the_small_tenant_beyond_one_job(tmp_path: Path) -> None:
    (tmp_path / "cloud.csv").write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,"
        "AvailabilityZone,Currency\ngpu.small,A800,1,8,64,10.0,,r1,r1-a,CNY\n"
    )
    text = POLICY.format(configs=CONFIGS, gpus=2).replace(
        "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000}\n",
        "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 0}\n"
        "  - {id: t2, kind: university, entity_country: CN, monthly_budget: 0}\n",
    )
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    # t1 floods six 1-hour jobs onto 2 GPUs at t=0; t2's one job arrives 10 minutes later.
    # No budget: nobody bursts. Both may wait 10 h.
    trace = [
        *(
            TraceJob(f"f{i}", 0, 3600, count=1, accelerators=("A800",), tenant="t1", max_wait_s=36000)
            for i in range(6)
        ),
        TraceJob("small", 600, 3600, count=1, accelerators=("A800",), tenant="t2", max_wait_s=36000),
    ]
    scenario = Scenario(seed=1)
    jobs = build_jobs(trace, policy, scenario)
    sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False, parallel=False)
    waits = {j.spec.name: r.wait_s for j, r in zip(jobs, sim.runs["policy"].records, strict=True)}
    # The first slot to free (at 1 h) goes to t2, not to t1's older queued jobs.
    assert waits["j-6"] == pytest.approx(3000.0)
    # t1's six jobs still all run: 2 at 0 h, 1 at 1 h, 2 at 2 h, 1 at 3 h.
    assert sorted(waits[f"j-{i}"] for i in range(6)) == pytest.approx([0, 0, 3600, 7200, 7200, 10800])
    tenants = sim.result["strategies"]["policy"]["tenants"]
    assert tenants["t2"]["p95_wait_s"] == pytest.approx(3000.0)
    assert tenants["t1"]["never_started"] == 0
    # Used 7 GPU-hours; t2 asked for 1, so it is entitled to 1 and t1 to 6: exactly fair.
    assert tenants["t2"]["onprem_share_entitled"] == pytest.approx(1 / 7, abs=1e-4)
    assert tenants["t2"]["used_over_entitled"] == pytest.approx(1.0)
    assert sim.result["strategies"]["policy"]["jain_index"] == pytest.approx(1.0)


GANG_POLICY = """\
version: 1
currency: CNY
objective: {{price: 1.0, wait_hour_cost: 40}}
sites:
  - id: onprem
    adapter: slurm
    adapter_config: {{endpoint: "http://127.0.0.1:1"}}
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: a800, accelerator: A800, count_per_node: {per_node}, nodes: {nodes}, price_hour: 14.0}}
tenants:
  - {{id: a, kind: university, entity_country: CN}}
  - {{id: b, kind: university, entity_country: CN}}
fair_share: {{half_life: 1h}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""


def test_a_gang_counts_all_its_nodes_in_fair_share(tmp_path: Path) -> None:
    """Review: the simulator counted an 8-node gang of 8 GPUs as 8 GPUs of its tenant's share (the
    live broker counts 64), so the same work as 8 × 8 gangs let its tenant run far ahead of
    another's small jobs: b's median wait 21,599 s against 5,399 s as single 64-GPU jobs."""
    waits = {}
    for shape, (per_node, nodes, count, gang) in {"gangs": (8, 16, 8, 8), "whole": (64, 2, 64, 1)}.items():
        (tmp_path / "p.yaml").write_text(GANG_POLICY.format(per_node=per_node, nodes=nodes))
        policy = load_policy(tmp_path / "p.yaml")
        trace = [
            *(TraceJob(f"a{i}", 0, 3600, count=count, nodes=gang, accelerators=("A800",), tenant="a",
                       max_wait_s=172800) for i in range(8)),
            *(TraceJob(f"b{i}", 0, 3600, count=8, accelerators=("A800",), tenant="b", max_wait_s=172800)
              for i in range(16)),
        ]
        scenario = Scenario(seed=1)
        jobs = build_jobs(trace, policy, scenario)
        sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False, parallel=False)
        waits[shape] = sorted(
            r.wait_s for j, r in zip(jobs, sim.runs["policy"].records, strict=True) if j.tenant == "b"
        )
    # The same GPUs, the same work: b waits alike whether a's jobs are gangs or whole nodes.
    assert waits["gangs"] == pytest.approx(waits["whole"]), waits
