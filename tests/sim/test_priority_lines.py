"""A tenant's normal-priority job is not hidden behind its own low-priority backlog (issue 15,
the untuned slices): the live dispatcher orders each tenant's queue by priority first, so capacity
that frees goes to the normal job; the simulator reads the head of each waiting line per
(tenant, priority, max_wait) and agrees. In the simulator and through the live planner alike.
Asserts decisions and outcomes, not timings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst import is_onprem
from broker.burst.snapshot import PassSnapshot
from broker.clock import ManualClock
from broker.decision import Action
from broker.jobspec import Priority
from broker.model import AcceleratorRequest, JobSpec, Resources, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.sim.jobs import build_jobs
from broker.sim.metrics import late
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from broker.sim.traces import TraceJob
from broker.store import SqliteStore, Submission
from tests.sim.test_projected_wait import a800, projected_policy

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
BACKLOG = 9
"""Low-priority jobs of the tenant queued before its normal one: more than a capacity event
used to read of one tenant's waiting jobs (8, in arrival order)."""


def low(name: str, at: float) -> TraceJob:
    return TraceJob(
        name, at, 3600.0, count=1, accelerators=("A800",), tenant="t1", max_wait_s=4 * 3600.0, priority="low"
    )


def test_capacity_that_frees_goes_to_the_normal_job_behind_a_low_priority_backlog(tmp_path: Path) -> None:
    # The only GPU runs A for 20 min. Nine low-priority jobs of t1 (max_wait 4 h) queue, then N
    # (normal, max_wait 30 min) two minutes in. When A ends, N is first in t1's order: it starts
    # on-prem in time. Read in arrival order, the nine hid N: a low-priority job took the GPU for
    # an hour and N, late, burst at its last responsible moment.
    policy = projected_policy(tmp_path)
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    trace = [a800("a", 0.0, 1200.0), *(low(f"l{i}", 10.0 * (i + 1)) for i in range(BACKLOG))]
    trace.append(a800("n", 120.0, 1800.0))
    jobs = build_jobs(trace, policy, scenario)
    records = simulate(policy, jobs, scenario, baselines=(), lower_bound=False).runs["policy"].records
    n = records[-1]
    assert not n.burst and not late(n)
    assert n.start_s == 1200.0  # the moment A freed the GPU
    assert all(r.start_s >= n.start_s + n.runtime_s for r in records[1:-1] if not r.burst)


def gpu_spec(priority: Priority) -> JobSpec:
    return JobSpec(
        name="train",
        command=("true",),
        priority=priority,
        runtime_estimate=timedelta(hours=1),
        resources=Resources(accelerators=AcceleratorRequest(count=1, any_of=("A800",))),
    )


def test_the_live_planner_starts_the_normal_job_first_too(tmp_path: Path) -> None:
    # The same queue through the live planner on a SQLite store, the GPU free: t1's queue is
    # ordered by priority, so of the ten the normal job is decided first and takes the GPU.
    projected_policy(tmp_path)  # writes the policy file the planner watches
    planner = Planner(PolicyWatcher(tmp_path / "policy.yaml"), ManualClock(NOW))
    store = SqliteStore(tmp_path / "broker.db")
    queued = [
        job
        for i in range(BACKLOG)
        for job, _ in store.submit(
            TenantId("t1"), [Submission(gpu_spec(Priority.LOW))], NOW + timedelta(seconds=i)
        )
    ]
    [(normal, _)] = store.submit(
        TenantId("t1"), [Submission(gpu_spec(Priority.NORMAL))], NOW + timedelta(minutes=2)
    )
    offers = [
        o.model_copy(update={"free": 1, "expected_wait_s": 0.0}) if is_onprem(planner.policy, o.site) else o
        for o in planner.catalog_offers()
    ]
    snap = PassSnapshot(now=NOW + timedelta(minutes=3), offers=offers, capacity_total={"onprem/gpu": 1})
    ordered = planner.order_queue([*queued, normal], snap.now, full=True)
    assert ordered[0].id == normal.id
    runs = [job.id for job in ordered if planner.decide(job, snap, store).action == Action.RUN]
    assert runs[:1] == [normal.id]
    store.close()
