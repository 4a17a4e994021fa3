"""Projections carry each tenant's estimate error job by job (issue 15, the estimates scenario):
a tenant whose runtime estimates scatter around their median gets running jobs' ends projected
later than the median, so a waiter behind one is not promised a start that half its jobs break.
In the simulator and through the live planner alike. Asserts decisions and outcomes, not timings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst import is_onprem
from broker.burst.snapshot import PassSnapshot
from broker.clock import ManualClock
from broker.decision import Action
from broker.model import AcceleratorRequest, Attempt, AttemptState, JobSpec, JobState, Resources, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.sim.jobs import SimJob, build_jobs
from broker.sim.metrics import late
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from broker.store import JobStore, SqliteStore, Submission
from tests.sim.test_projected_wait import a800, projected_policy

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
SCATTER = (0.8, 1.25, 0.8, 1.25, 1.0)
"""The tenant's past jobs' actual/estimate: median 1 (its estimates are right on the median),
but each job misses by a quarter either way."""


def with_estimate(job: SimJob, estimate_s: float) -> SimJob:
    spec = job.spec.model_copy(update={"runtime_estimate": timedelta(seconds=estimate_s)})
    return dataclasses.replace(job, spec=spec)


def test_a_waiter_behind_a_job_of_a_scattering_tenant_bursts_in_time(tmp_path: Path) -> None:
    # t1's five past jobs (alone on the one GPU) ran 0.8x-1.25x their estimates, median 1. A
    # (25 min estimated, really 40) takes the GPU; B (max_wait 30 min) arrives a minute later.
    # At the median, A ends in 24 min: B would wait on-prem, A overruns, B starts 9 min late.
    # With the scatter, A is projected to end ~10 min later: B is late, plans a burst at its last
    # responsible moment and, A still running then, bursts in time.
    policy = projected_policy(tmp_path)
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    trace = [a800(f"h{i}", i * 700.0, 500.0) for i in range(len(SCATTER))]
    t0 = 700.0 * len(SCATTER)
    trace += [a800("a", t0, 2400.0), a800("b", t0 + 60, 3600.0)]
    jobs = build_jobs(trace, policy, scenario)
    estimates = [500.0 / r for r in SCATTER] + [1500.0, 3600.0]
    jobs = [with_estimate(j, e) for j, e in zip(jobs, estimates, strict=True)]
    sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False)
    records = sim.runs["policy"].records
    b = records[-1]
    assert b.burst and not late(b)
    assert not any(late(r) for r in records)
    assert sim.result["strategies"]["policy"]["runtime_ratios"]["t1"] > 1.2  # above the median


def test_the_live_planner_projects_the_scatter_too(tmp_path: Path) -> None:
    # The same A and B through the live planner on a SQLite store: t1's history is read from
    # the store, A runs on the GPU since a minute ago, B is decided now and is projected late.
    projected_policy(tmp_path)  # writes the policy file the planner watches
    planner = Planner(PolicyWatcher(tmp_path / "policy.yaml"), ManualClock(NOW))
    store = SqliteStore(tmp_path / "broker.db")
    for i, ratio in enumerate(SCATTER):
        finished(store, NOW - timedelta(days=1, hours=-i), 500.0 / ratio, 500.0)
    snap = snapshot(planner, NOW)
    attempt = running(store, snap, NOW - timedelta(minutes=1), estimate_s=1500.0)
    planner.waits.noted(snap, [attempt])
    [(b, _)] = store.submit(TenantId("t1"), [Submission(gpu_spec(3600.0))], NOW)
    planner.order_queue([b], NOW, full=True)
    got = planner.decide(b, snap, store)
    assert got.action == Action.WAIT
    assert got.facts.onprem_expected_wait_s is not None and got.facts.onprem_expected_wait_s > 30 * 60
    assert got.facts.burst_in_s is not None  # late: a burst at its last responsible moment
    assert planner.waits.ratios.ratio("t1", store, NOW) > 1.2
    assert planner.policy.burst.wait_model == "projected"
    store.close()


def gpu_spec(estimate_s: float) -> JobSpec:
    return JobSpec(
        name="train",
        command=("true",),
        runtime_estimate=timedelta(seconds=estimate_s),
        resources=Resources(accelerators=AcceleratorRequest(count=1, any_of=("A800",))),
    )


def finished(store: JobStore, start: datetime, estimate_s: float, actual_s: float) -> None:
    """A past job of t1 that ran `actual_s` against its `estimate_s`."""
    [(job, _)] = store.submit(TenantId("t1"), [Submission(gpu_spec(estimate_s))], start)
    for state in (JobState.PLACING, JobState.PROVISIONING):
        store.transition(job.id, state, start)
    store.transition(job.id, JobState.RUNNING, start, kind="running")
    store.transition(job.id, JobState.SUCCEEDED, start + timedelta(seconds=actual_s))


def running(store: JobStore, snap: PassSnapshot, started: datetime, *, estimate_s: float) -> Attempt:
    """A job of t1 running on the on-prem GPU since `started`."""
    offer = next(o for o in snap.offers if o.partition == "onprem/gpu")
    [(job, _)] = store.submit(TenantId("t1"), [Submission(gpu_spec(estimate_s))], started)
    for state in (JobState.PLACING, JobState.PROVISIONING):
        store.transition(job.id, state, started)
    attempt = store.create_attempt(job.id, offer.site, offer, "tok-a", started)
    store.update_attempt(attempt.id, started, backend_id="pid-1", state=AttemptState.RUNNING)
    store.transition(job.id, JobState.RUNNING, started, kind="running")
    return store.get_attempt(attempt.id)


def snapshot(planner: Planner, now: datetime) -> PassSnapshot:
    """A pass snapshot whose one on-prem GPU is busy (with the running job the test adds)."""
    offers = [
        o.model_copy(update={"free": 0, "expected_wait_s": 0.0}) if is_onprem(planner.policy, o.site) else o
        for o in planner.catalog_offers()
    ]
    return PassSnapshot(now=now, offers=offers, capacity_total={"onprem/gpu": 1})
