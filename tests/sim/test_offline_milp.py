"""#15 offline reference: the MILP over time windows keeps the schedule feasible and never dearer."""

from __future__ import annotations

import random

import pytest

from broker.model import JobSpec, TenantId
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob
from broker.sim.offline import offline_schedule
from broker.sim.offline_milp import check, improve


def sim_job(i: int, arrival: float, runtime: float, demand: int, wait: float) -> SimJob:
    spec = JobSpec.model_validate({"name": f"j{i}", "command": ["x"], "runtime_estimate": f"{runtime}s"})
    return SimJob(i, f"j{i}", TenantId("t"), spec, arrival, runtime, demand, wait)


def test_milp_finds_the_start_the_greedy_missed() -> None:
    # One GPU. The greedy gives the job that saves most (x) its earliest start, 0, and sends
    # y (which must start at 0) to the cloud: 10 + 40. Starting x an hour later, within its
    # max_wait, keeps both at home: 10 + 10.
    jobs = [sim_job(0, 0, 7200, 1, 3600), sim_job(1, 0, 3600, 1, 0)]
    facts = [JobFacts((), {"p": 10.0}, 60.0, {}), JobFacts((), {"p": 10.0}, 40.0, {})]
    greedy = offline_schedule(jobs, facts, {"p": 1})
    assert greedy.cost == pytest.approx(50.0) and greedy.method == "greedy"
    better = improve(jobs, facts, {"p": 1}, greedy)
    assert better.cost == pytest.approx(20.0) and better.method == "greedy+milp"
    assert better.placements == {0: ("p", 3600.0), 1: ("p", 0.0)}
    assert (better.onprem_jobs, better.cloud_jobs) == (2, 0)
    assert check(jobs, facts, {"p": 1}, better) == []


def test_check_catches_an_overcommitted_or_late_schedule() -> None:
    jobs = [sim_job(0, 0, 3600, 1, 0), sim_job(1, 0, 3600, 1, 0)]
    facts = [JobFacts((), {"p": 10.0}, 60.0, {}), JobFacts((), {"p": 10.0}, 40.0, {})]
    greedy = offline_schedule(jobs, facts, {"p": 1})
    both = {0: ("p", 0.0), 1: ("p", 0.0)}
    from dataclasses import replace

    assert any(
        "accelerators in use" in p
        for p in check(jobs, facts, {"p": 1}, replace(greedy, placements=both, cost=20.0))
    )
    late = {0: ("p", 0.0), 1: ("p", 3600.0)}
    assert any(
        "starts at 3600" in p
        for p in check(jobs, facts, {"p": 1}, replace(greedy, placements=late, cost=20.0))
    )


@pytest.mark.parametrize("seed", range(6))
def test_random_schedules_stay_feasible_and_never_cost_more(seed: int) -> None:
    rng = random.Random(seed)
    jobs, facts = [], []
    for i in range(120):
        runtime = rng.choice([600, 1800, 3600, 7200])
        jobs.append(
            sim_job(
                i, rng.uniform(0, 6 * 3600), runtime, rng.choice([1, 2, 4]), rng.choice([0, 900, 1800, 3600])
            )
        )
        home = {k: rng.uniform(1, 10) for k in rng.sample(["a", "b"], rng.choice([1, 2]))}
        cloud = None if rng.random() < 0.1 else rng.uniform(2, 30)
        facts.append(JobFacts((), home, cloud, {}))
    jobs.sort(key=lambda j: j.arrival_s)
    jobs = [
        SimJob(i, j.id, j.tenant, j.spec, j.arrival_s, j.runtime_s, j.demand, j.max_wait_s)
        for i, j in enumerate(jobs)
    ]
    capacity = {"a": 4, "b": 6}
    greedy = offline_schedule(jobs, facts, capacity)
    assert check(jobs, facts, capacity, greedy) == []
    better = improve(jobs, facts, capacity, greedy, windows=4, window_jobs=30)
    assert check(jobs, facts, capacity, better) == []
    assert better.cost <= greedy.cost + 1e-9


def test_milp_still_improves_after_the_lp_bound_ran_in_the_same_process() -> None:
    # HiGHS keeps one thread pool per process: the LP bound solved first (as a pool worker may
    # do before it takes the offline task) must not leave the MILP unable to run.
    from broker.model import Offer, SiteId
    from broker.sim.lower_bound import LowerBound

    jobs = [sim_job(0, 0, 7200, 1, 3600), sim_job(1, 0, 3600, 1, 0)]
    home = (Offer(site=SiteId("home"), instance_type="p", accelerator="A800", count=1, price_per_hour=10.0),)
    facts = [JobFacts(home, {"p": 10.0}, 60.0, {}), JobFacts(home, {"p": 10.0}, 40.0, {})]
    assert LowerBound(jobs, facts, {"p": 1}).solve(0) == pytest.approx(20.0)
    better = improve(jobs, facts, {"p": 1}, offline_schedule(jobs, facts, {"p": 1}))
    assert better.cost == pytest.approx(20.0) and better.method == "greedy+milp"
