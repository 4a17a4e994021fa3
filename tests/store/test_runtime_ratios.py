"""The per-tenant runtime ratio the live wait projection learns from the store (SQLite and PostgreSQL).

A tenant whose jobs historically ran twice their estimates gets projections twice as long: the
dispatcher's `LiveWaits` reads the running job's start and its tenant's history from a real
store, and the queued job's projected wait behind it doubles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.runtimes import LearnedRatios, learned_ratio
from broker.dispatch.waits import LiveWaits
from broker.jobspec import Resources
from broker.model import Attempt, AttemptState, JobSpec, JobState, Offer, SiteId, TenantId
from broker.policy import Policy, load_policy_text
from broker.store import JobStore, PostgresStore, SqliteStore, StoreError, Submission
from tests.burst.conftest import POLICY, write_policy

T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
A800 = Offer(
    site=SiteId("onprem"), instance_type="a800", accelerator="A800", count=8, price_per_hour=14.0, free=0
)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        opened: JobStore = SqliteStore(tmp_path / "broker.db")
    else:
        opened = PostgresStore(request.getfixturevalue("pg_dsn"))
    yield opened
    opened.close()


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = write_policy(tmp_path, POLICY.replace("burst:\n", "burst:\n  wait_model: projected\n", 1))
    return load_policy_text(path.read_text(), str(path))


def gpu_job(name: str, hours: float) -> JobSpec:
    return JobSpec(
        name=name,
        command=("python", "train.py"),
        runtime_estimate=timedelta(hours=hours),
        resources=Resources.model_validate({"accelerators": {"count": 8, "any_of": ["A800"]}}),
    )


def history(store: JobStore, tenant: str, stretch: float, n: int = 5) -> None:
    """`n` finished 1-hour-estimate jobs of `tenant` that each ran `stretch` hours."""
    for i in range(n):
        [(job, _)] = store.submit(TenantId(tenant), [Submission(gpu_job(f"past-{i}", 1.0))], T0)
        start = T0 + timedelta(hours=3 * i)
        for state in (JobState.PLACING, JobState.PROVISIONING):
            store.transition(job.id, state, start)
        store.transition(job.id, JobState.RUNNING, start, kind="running")
        store.transition(job.id, JobState.SUCCEEDED, start + timedelta(hours=stretch))


def running(store: JobStore, tenant: str, started: datetime) -> Attempt:
    """A 1-hour-estimate job of `tenant` running on the whole A800 partition since `started`."""
    [(job, _)] = store.submit(TenantId(tenant), [Submission(gpu_job("now", 1.0))], started)
    for state in (JobState.PLACING, JobState.PROVISIONING):
        store.transition(job.id, state, started)
    attempt = store.create_attempt(job.id, A800.site, A800, "tok-" + tenant, started)
    store.update_attempt(attempt.id, started, backend_id="pid-1", state=AttemptState.RUNNING)
    store.transition(job.id, JobState.RUNNING, started, kind="running")
    return store.get_attempt(attempt.id)


def projected_behind(store: JobStore, policy: Policy, tenant: str) -> float:
    """The projected wait of a full-partition job queued behind `tenant`'s running job."""
    snap = PassSnapshot(now=NOW, offers=[A800], capacity_total={A800.partition: 8})
    waits = LiveWaits()
    waits.noted(snap, [running(store, tenant, NOW - timedelta(minutes=30))])
    got = waits.for_job(policy, gpu_job("next", 1.0), snap, store, frozenset())
    assert got is not None
    return got[A800.partition]


def test_a_tenant_whose_jobs_ran_twice_their_estimates_gets_projections_twice_as_long(
    store: JobStore, policy: Policy
) -> None:
    history(store, "lab", stretch=2.0)
    history(store, "poor", stretch=1.0)
    ratios = LearnedRatios()
    assert ratios.ratio("lab", store, NOW) == 2.0
    assert ratios.ratio("poor", store, NOW) == 1.0
    assert ratios.ratio("vouchered", store, NOW) == 1.0  # no history
    # Started 30 min ago with a 1 h estimate: it ends in 30 min at ratio 1, in 90 min at ratio 2.
    assert projected_behind(store, policy, "poor") == pytest.approx(30 * 60)
    assert projected_behind(store, policy, "lab") == pytest.approx(90 * 60)


def test_the_ratio_is_learned_from_a_bounded_window_and_clamped(store: JobStore) -> None:
    history(store, "lab", stretch=1.0, n=7)
    history(store, "lab", stretch=3.0, n=5)  # only the newest runs count: the window is bounded
    assert LearnedRatios(window=5).ratio("lab", store, NOW) == pytest.approx(3.0)
    assert LearnedRatios(window=100).ratio("lab", store, NOW) == 1.0  # all 12: the older ones outvote
    assert learned_ratio([(3600.0, 36000.0)] * 5) == 4.0 and learned_ratio([(3600.0, 60.0)] * 5) == 0.25
    assert learned_ratio([]) == 1.0 and learned_ratio([(0.0, 60.0)]) == 1.0


def test_waiters_ahead_count_in_decision_order_and_bursts_hold_up_nobody(
    store: JobStore, policy: Policy
) -> None:
    """A full pass: each job sees the waiters decided before it; a job that bursts (or will, at
    its last responsible moment) is left out; a pass over new jobs keeps the earlier waiters."""
    snap = PassSnapshot(now=NOW, offers=[A800], capacity_total={A800.partition: 8})
    waits = LiveWaits()
    waits.noted(snap, [running(store, "poor", NOW - timedelta(minutes=30))])  # ends in 30 min
    jobs = []
    for name in ("first", "bursting", "late", "second"):
        [(job, _)] = store.submit(TenantId("lab"), [Submission(gpu_job(name, 1.0))], NOW)
        jobs.append(job)

    def wait_of(spec: JobSpec) -> float:
        got = waits.for_job(policy, spec, snap, store, frozenset())
        assert got is not None
        return got[A800.partition]

    cloud = Offer(site=SiteId("aws-east"), instance_type="p4d.24xlarge", accelerator="A100", count=8,
                  price_per_hour=32.77)
    waiting = Decision(Action.WAIT, A800, facts=DecisionFacts(onprem_expected_wait_s=1800.0))
    decisions = [
        waiting,
        Decision(Action.RUN, cloud, burst=True),
        Decision(Action.WAIT, A800, facts=DecisionFacts(onprem_expected_wait_s=9e3, burst_in_s=60.0)),
        waiting,
    ]
    waits.begin_pass(full=True)
    seen = []
    for place, (job, decision) in enumerate(zip(jobs, decisions, strict=True), start=1):
        seen.append(wait_of(job.spec))
        waits.record(job, decision, policy, snap, store, place)
    # first: behind the running job; the burst and the late job add nothing for "second".
    assert seen == [pytest.approx(1800.0), pytest.approx(1800 + 3600.0),
                    pytest.approx(1800 + 3600.0), pytest.approx(1800 + 3600.0)]
    # Explain counts only the waiters that stand before the job's place in the fair-share order.
    for place, expected in ((1, 1800.0), (2, 1800 + 3600.0), (4, 1800 + 3600.0), (5, 1800 + 7200.0)):
        got = waits.for_job(policy, gpu_job("asked", 1.0), snap, store, frozenset(), place)
        assert got is not None and got[A800.partition] == pytest.approx(expected), place
    waits.begin_pass(full=False)  # new jobs go behind both waiters
    assert wait_of(gpu_job("new", 1.0)) == pytest.approx(1800 + 2 * 3600.0)
    [(new, _)] = store.submit(TenantId("lab"), [Submission(gpu_job("new", 1.0))], NOW)
    waits.record(new, waiting, policy, snap, store, 5)  # decided among new jobs: ranked behind both
    for place, expected in ((1, 1800.0), (5, 1800 + 7200.0), (6, 1800 + 3 * 3600.0)):
        asked = waits.for_job(policy, gpu_job("asked", 1.0), snap, store, frozenset(), place)
        assert asked is not None and asked[A800.partition] == pytest.approx(expected), place
    # The next pass over new jobs ranks the new one first (a tenant far under its share): the
    # waiters stand where that ranking puts them, and a job 2nd there has only it ahead.
    ranked = {new.id: 1, jobs[0].id: 2, jobs[3].id: 5}
    waits.reposition(lambda job_id: ranked.get(job_id, math.inf))
    asked = waits.for_job(policy, gpu_job("asked", 1.0), snap, store, frozenset(), 2)
    assert asked is not None and asked[A800.partition] == pytest.approx(1800 + 3600.0)
    waits.begin_pass(full=True)  # a head scan that skips "second" keeps it where it was
    waits.keep(jobs[3], 4)
    assert wait_of(gpu_job("new", 1.0)) == pytest.approx(1800 + 3600.0)


def test_a_partition_whose_capacity_was_not_read_is_left_to_the_fluid_estimate(
    store: JobStore, policy: Policy
) -> None:
    """Offers from the catalog alone (no backend answered yet) carry no free count: no projection
    there (it would read as "never starts" and burst everything)."""
    unread = A800.model_copy(update={"free": None})
    snap = PassSnapshot(now=NOW, offers=[unread], capacity_total={})
    waits = LiveWaits()
    waits.noted(snap, [])
    assert waits.for_job(policy, gpu_job("next", 1.0), snap, store, frozenset()) == {}


def test_bursts_lined_up_on_a_route_count_for_jobs_due_later(store: JobStore, policy: Policy) -> None:
    """Jobs waiting to burst to a site at their last responsible moment are `launches_ahead` of a
    job due after them (the decision moves its own last moment earlier); gone once they leave."""
    snap = PassSnapshot(now=NOW, offers=[A800], capacity_total={A800.partition: 8})
    waits = LiveWaits()
    waits.noted(snap, [])
    waits.begin_pass(full=True)
    route = "aws-east/us-east-1a/p4d/ondemand"
    committed = DecisionFacts(max_wait_s=600.0, burst_in_s=300.0, cloud_offer=route)
    for name in ("one", "two"):
        [(job, _)] = store.submit(TenantId("lab"), [Submission(gpu_job(name, 1.0))], NOW)
        waits.record(job, Decision(Action.WAIT, A800, facts=committed), policy, snap, store, 1)
    spec = gpu_job("asked", 1.0)  # the policy's default max_wait (30 min): due after both
    assert waits.launches_ahead(policy, spec, "lab", NOW) == {SiteId("aws-east"): 2}
    assert waits.launches_ahead(policy, spec, "lab", NOW - timedelta(hours=1)) == {}
    waits.begin_pass(full=True)  # the next full pass does not see them: they left the queue
    waits.begin_pass(full=True)
    assert waits.launches_ahead(policy, spec, "lab", NOW) == {}


class FailingHistory(SqliteStore):
    """A store whose runtime history cannot be read (the database failing), counting the reads."""

    reads = 0

    def recent_runtimes(self, tenant: TenantId, limit: int) -> list[tuple[float, float]]:
        self.reads += 1
        raise StoreError("database is locked")


def test_a_failing_history_read_is_not_retried_for_every_running_job(tmp_path: Path) -> None:
    """While the store fails the fallback ratio is kept a short while (injected clock): one read
    per retry period, not one per running job per pass; the last good ratio is the fallback."""
    failing = FailingHistory(tmp_path / "broker.db")
    ratios = LearnedRatios(ttl_s=300.0, retry_s=30.0)
    assert [ratios.ratio("lab", failing, NOW) for _ in range(50)] == [1.0] * 50
    assert failing.reads == 1
    assert ratios.ratio("lab", failing, NOW + timedelta(seconds=29)) == 1.0 and failing.reads == 1
    assert ratios.ratio("lab", failing, NOW + timedelta(seconds=30)) == 1.0 and failing.reads == 2
    good = SqliteStore(tmp_path / "good.db")
    history(good, "lab", stretch=2.0)
    assert ratios.ratio("lab", good, NOW + timedelta(seconds=60)) == 2.0
    later = NOW + timedelta(seconds=60 + 300)
    assert ratios.ratio("lab", failing, later) == 2.0 and failing.reads == 3
    assert ratios.ratio("lab", failing, later + timedelta(seconds=10)) == 2.0 and failing.reads == 3
    failing.close()
    good.close()


def test_a_job_that_resumed_from_checkpoints_counts_the_work_it_kept(store: JobStore) -> None:
    """Review: a checkpointing job preempted after 50 min (10-min checkpoints) that resumed and ran
    20 min more was learned as 20 min of work against its 1 h estimate (ratio 0.33, only the last
    run), where replay and the simulator count its work: 50 min kept, 20 min more, 70 min. A job
    without checkpoints restarts from zero: its last run is its work."""
    for name, checkpoint in (("resumed", timedelta(minutes=10)), ("restarted", None)):
        spec = gpu_job(name, 1.0).model_copy(update={"checkpoint": None})
        if checkpoint is not None:
            spec = JobSpec.model_validate({**spec.model_dump(), "checkpoint": {"interval": checkpoint}})
        [(job, _)] = store.submit(TenantId(name), [Submission(spec)], T0)
        runs = ((T0, 52, JobState.PREEMPTED), (T0 + timedelta(hours=1), 20, JobState.SUCCEEDED))
        for start, minutes, end in runs:
            for state in (JobState.PLACING, JobState.PROVISIONING):
                store.transition(job.id, state, start)
            store.transition(job.id, JobState.RUNNING, start, kind="running")
            store.transition(job.id, end, start + timedelta(minutes=minutes))
            if end is JobState.PREEMPTED:
                store.transition(job.id, JobState.QUEUED, start + timedelta(minutes=minutes))
    # 52 min run, checkpoint at 50: 50 min kept, then 20 more.
    assert store.recent_runtimes(TenantId("resumed"), 50) == [(3600.0, 70 * 60.0)]
    assert store.recent_runtimes(TenantId("restarted"), 50) == [(3600.0, 20 * 60.0)]
