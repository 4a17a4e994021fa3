"""#15 offline reference: the greedy priced by the LP bound's capacity duals.

The plain greedy gives the job that saves most its earliest on-time start, so patient jobs
fill the contended hours and the urgent ones that arrive there go to the cloud; the exact
optimum of a reduced bundled-trace instance was 11-24% below it (bench/reference_check.py).
"""

from __future__ import annotations

import random

import pytest

from broker.model import JobSpec, TenantId
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob
from broker.sim.lower_bound import LowerBound
from broker.sim.offline import offline_schedule, priced_schedule
from broker.sim.offline_milp import check


def sim_job(i: int, arrival: float, runtime: float, demand: int, wait: float) -> SimJob:
    spec = JobSpec.model_validate({"name": f"j{i}", "command": ["x"], "runtime_estimate": f"{runtime}s"})
    return SimJob(i, f"j{i}", TenantId("t"), spec, arrival, runtime, demand, wait)


def patient_and_urgent() -> tuple[list[SimJob], list[JobFacts]]:
    # Two GPUs. Two patient 1 h jobs (may wait 2 h, save 90 each at home) and four urgent
    # 30-min jobs (must start on arrival: two at 0, two at 30 min; save 55 each).
    jobs = [sim_job(0, 0, 3600, 1, 7200), sim_job(1, 0, 3600, 1, 7200)]
    jobs += [sim_job(2 + n, 1800 * (n // 2), 1800, 1, 0) for n in range(4)]
    facts = [JobFacts((), {"p": 10.0}, 100.0, {})] * 2 + [JobFacts((), {"p": 5.0}, 60.0, {})] * 4
    return jobs, facts


def test_the_priced_greedy_defers_patient_jobs_the_plain_greedy_starts_first() -> None:
    jobs, facts = patient_and_urgent()
    greedy = offline_schedule(jobs, facts, {"p": 2})
    assert greedy.cost == pytest.approx(260.0)  # patient jobs at 0, every urgent one in the cloud
    bound = LowerBound(jobs, facts, {"p": 2})
    assert bound.solve(0) == pytest.approx(40.0, rel=1e-6)
    prices = bound.capacity_prices()
    assert prices is not None
    priced = priced_schedule(jobs, facts, {"p": 2}, prices)
    assert priced.cost == pytest.approx(40.0) and priced.method == "priced"
    starts = {i: s for i, (_, s) in priced.placements.items()}
    assert starts == {0: 3600.0, 1: 3600.0, 2: 0.0, 3: 0.0, 4: 1800.0, 5: 1800.0}
    assert check(jobs, facts, {"p": 2}, priced) == []


def test_jobs_no_cloud_can_run_still_run_late_at_home() -> None:
    jobs = [sim_job(0, 0, 3600, 1, 0), sim_job(1, 0, 3600, 1, 0)]
    facts = [JobFacts((), {"p": 10.0}, None, {}), JobFacts((), {"p": 10.0}, None, {})]
    bound = LowerBound(jobs, facts, {"p": 1})
    bound.solve(1)
    prices = bound.capacity_prices()
    assert prices is not None
    priced = priced_schedule(jobs, facts, {"p": 1}, prices)
    assert (priced.onprem_jobs, priced.cloud_jobs, priced.late_jobs) == (2, 0, 1)
    assert sorted(s for _, s in priced.placements.values()) == [0.0, 3600.0]


@pytest.mark.parametrize("seed", range(6))
def test_random_priced_schedules_are_feasible_and_above_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    jobs, facts = [], []
    for i in range(150):
        runtime = rng.choice([300, 1800, 3600, 7200, 14400])
        jobs.append(sim_job(i, rng.uniform(0, 8 * 3600), runtime, rng.choice([1, 1, 1, 2, 4]),
                            rng.choice([0, 1800, 1800, 14400])))
        hours = runtime / 3600 * jobs[-1].demand
        cloud = None if rng.random() < 0.05 else hours * rng.uniform(4, 12)
        facts.append(JobFacts((), {"a": hours * 1.2, "b": hours * 1.6}, cloud, {}))
    capacity = {"a": 6, "b": 4}  # (every job fits either: one larger than a partition has no column there)
    bound = LowerBound(jobs, facts, capacity)
    floor = bound.solve(0)
    prices = bound.capacity_prices()
    assert floor is not None and prices is not None
    priced = priced_schedule(jobs, facts, capacity, prices)
    assert check(jobs, facts, capacity, priced) == []
    if priced.late_jobs == 0:
        assert priced.cost >= floor - 1e-6
    assert priced.onprem_jobs + priced.cloud_jobs + priced.unplaced == len(jobs)
