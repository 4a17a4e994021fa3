"""A policy with no cloud site, or a job no cloud offer can take: only freed capacity can start
it, so a simulation does not re-decide each of them every 2 h of a weeks-long queue (the
bundled trace under `configs/policy-local.yaml` took ~180,000 decisions for its first 500
jobs and did not finish the whole trace in an hour). Every job still starts as soon as the
one GPU frees, in order."""

from __future__ import annotations

from pathlib import Path

from broker.policy import Policy, load_policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CONFIGS, tiny_policy

ONPREM_ONLY = f"""version: 1
currency: CNY
objective: {{price: 1.0, wait_hour_cost: 40}}
accelerators: {CONFIGS}/accelerators.yaml
regimes: {CONFIGS}/regimes.yaml
sites:
  - id: onprem
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: gpu, accelerator: A800, count_per_node: 1, price_hour: 2.0}}
tenants:
  - {{id: t1, kind: university, entity_country: CN}}
burst:
  max_wait: {{default: 30m}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""

DAY = 86_400.0
JOBS = 20


def onprem_only(folder: Path) -> Policy:
    (folder / "policy.yaml").write_text(ONPREM_ONLY)
    return load_policy(folder / "policy.yaml")


def test_a_weeks_long_queue_is_not_re_decided_every_two_hours(tmp_path: Path) -> None:
    policy = onprem_only(tmp_path)
    trace = [
        TraceJob(f"j{i}", i, 2 * DAY, count=1, accelerators=("A800",), tenant="t1") for i in range(JOBS)
    ]
    scenario = Scenario(seed=1)
    jobs = build_jobs(trace, policy, scenario)
    sim = simulate(policy, jobs, scenario, baselines=("onprem-only", "cheapest-offer", "cloud-cheapest"))
    for name, run in sim.runs.items():
        starts = [r.start_s for r in run.records]
        # One GPU, each job 2 days: job i starts when job i-1 ends, the last after 38 days.
        assert starts == [0.0, *(i * 2 * DAY for i in range(1, JOBS))], name
        # A job re-decided every 2 h would take ~450 decisions waiting 38 days; each waiting
        # job is looked at again on a growing interval (the policy) or when capacity frees.
        assert max(r.decisions for r in run.records) <= 40, (name, [r.decisions for r in run.records])


def test_a_job_no_cloud_offer_fits_is_not_re_decided_every_two_hours(tmp_path: Path) -> None:
    # The tiny world's cloud has 1- and 2-GPU machines: a 4-GPU job can only run at home, where
    # one 4-GPU node is busy for days. Only freed capacity can start the queue, in order.
    policy = tiny_policy(tmp_path, gpus=4)
    trace = [TraceJob(f"j{i}", i, 2 * DAY, count=4, accelerators=("A800",), tenant="t1") for i in range(JOBS)]
    scenario = Scenario(seed=1)
    sim = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=("cheapest-offer",))
    for name, run in sim.runs.items():
        assert [r.start_s for r in run.records] == [0.0, *(i * 2 * DAY for i in range(1, JOBS))], name
        assert not any(r.burst for r in run.records), name
        assert max(r.decisions for r in run.records) <= 40, (name, [r.decisions for r in run.records])
