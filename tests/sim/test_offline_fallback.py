"""The offline schedule's fallback for a job with no on-time start at home (`_Book.elsewhere`): it
ran the job only on the cheapest partition, so a job that partition is too small for was counted
`unplaced` (and priced at 0) where a bigger one runs it late; and it counted every such start late,
also one on time (the cloud looked cheaper but no budget paid it)."""

from __future__ import annotations

from pathlib import Path

from broker.policy import Policy, load_policy
from broker.sim.budgets import Purse
from broker.sim.facts import all_facts
from broker.sim.jobs import build_jobs
from broker.sim.offline import late_count, offline_schedule
from broker.sim.scenario import Delay, Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CATALOG, CONFIGS, POLICY

HOUR = 3600.0
SCENARIO = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
GPU_LINE = """      - {name: gpu, accelerator: A800, count_per_node: 4, nodes: 1, price_hour: 2.0,
          cpus_per_node: 64, memory_gb_per_node: 512}
"""


def policy_of(folder: Path, *, gpu_price: float = 2.0, budget: int = 100000) -> Policy:
    """The tiny world with a 4-GPU `gpu` partition and an 8-GPU `big` one at 3 CNY an hour."""
    (folder / "cloud.csv").write_text(CATALOG)
    text = POLICY.format(configs=CONFIGS, gpus=4)
    big = GPU_LINE.replace("name: gpu", "name: big")
    big = big.replace("nodes: 1, price_hour: 2.0", "nodes: 2, price_hour: 3.0")
    text = text.replace(GPU_LINE, GPU_LINE.replace("price_hour: 2.0", f"price_hour: {gpu_price}") + big)
    text = text.replace("monthly_budget: 100000", f"monthly_budget: {budget}")
    (folder / "policy.yaml").write_text(text)
    return load_policy(folder / "policy.yaml")


def test_a_job_the_cheapest_partition_cannot_hold_runs_late_on_a_bigger_one(tmp_path: Path) -> None:
    # Three 4-GPU jobs that may not wait, no cloud instance that size; `gpu` is cut to 2 GPUs (as
    # `--onprem-gpus` scales a partition below a job), `big` holds two at once: the third runs late
    # on `big` after the first two, not nowhere.
    policy = policy_of(tmp_path)
    four = TraceJob("j", 0, HOUR, count=4, accelerators=("A800",), tenant="t1", max_wait_s=0)
    trace = [four] * 3
    jobs = build_jobs(trace, policy, SCENARIO)
    facts = all_facts(jobs, policy)
    assert all(f.cloud_cost is None for f in facts)
    sched = offline_schedule(jobs, facts, {"onprem/gpu": 2, "onprem/big": 8})
    assert (sched.unplaced, sched.onprem_jobs, sched.late_jobs) == (0, 3, 1)
    assert sorted(start for _, start in sched.placements.values()) == [0, 0, HOUR]
    assert {k for k, _ in sched.placements.values()} == {"onprem/big"}
    assert sched.cost == 3 * 3.0 * 4 * HOUR / 3600


def test_a_job_no_budget_bursts_starts_on_time_at_home_and_is_not_counted_late(tmp_path: Path) -> None:
    # At home costs 50 CNY an hour against 10 in the cloud, so the greedy would burst; the tenant's
    # budget (1 CNY) pays no burst in any month, so the job runs at home at its arrival: on time.
    policy = policy_of(tmp_path, gpu_price=50.0, budget=1)
    trace = [TraceJob("j", 0, HOUR, count=1, accelerators=("A800",), tenant="t1", max_wait_s=1800)]
    jobs = build_jobs(trace, policy, SCENARIO)
    facts = all_facts(jobs, policy)
    assert facts[0].cloud_cost is not None and facts[0].cloud_cost < facts[0].onprem["onprem/gpu"]
    sched = offline_schedule(jobs, facts, {"onprem/gpu": 4}, purse=Purse(policy))
    assert sched.placements == {0: ("onprem/gpu", 0.0)} and sched.cost == 50.0
    assert sched.late_jobs == 0 == late_count(jobs, sched.placements, sched.burst_late)
