"""A job pending at Slurm whose reclaim the waste budget holds back says so with an approximate
time, recorded once rather than at every scan. The time was never said again: a job told "about
10:05 UTC" still read that at 10:40, after other reclaims had drained the budget further. It is
said again once it has moved by 10 minutes or more, and not for smaller moves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.dispatch.withdraw_reclaim import _note_held_back
from broker.fair_reclaim import Taken
from broker.model import Attempt, Job, JobSpec, JobState, Offer, SiteId, TenantId
from broker.store import SqliteStore, Submission

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
REASON = "reclaim on lab/a800 waits for the waste budget: preempting 2 unit(s) would lose 1.5 GPU-hours"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "broker.db")
    yield s
    s.close()


def pending_job(store: SqliteStore) -> tuple[Job, Attempt]:
    spec = JobSpec(name="owner-job", command=("true",), runtime_estimate=timedelta(hours=1))
    [(job, _)] = store.submit(TenantId("owner"), [Submission(spec)], NOW)
    store.transition(job.id, JobState.PLACING, NOW, kind="placed", site="lab")
    offer = Offer(site=SiteId("lab"), instance_type="a800", accelerator="A800", count=2, price_per_hour=14)
    attempt = store.create_attempt(job.id, SiteId("lab"), offer, "tok-1", NOW)
    store.transition(job.id, JobState.PROVISIONING, NOW, kind="provisioning", site="lab")
    return store.get(job.id), attempt


def note(store: SqliteStore, job: Job, attempt: Attempt, due: datetime, at: datetime) -> str:
    _note_held_back(store, store.get(job.id), attempt, Taken(reason=REASON, due_s=due.timestamp()), at)
    return store.get(job.id).message


def test_the_time_is_said_again_once_it_has_moved_by_ten_minutes(store: SqliteStore) -> None:
    job, attempt = pending_job(store)
    first = note(store, job, attempt, NOW + timedelta(minutes=5), NOW)
    assert "about 10:05 UTC" in first
    said = len(store.events_after(job.id, 0))
    # Refilled a little later than first thought: not worth an event.
    assert note(store, job, attempt, NOW + timedelta(minutes=9), NOW + timedelta(minutes=1)) == first
    assert len(store.events_after(job.id, 0)) == said
    # Drained by other reclaims meanwhile: the time moved by 35 minutes.
    later = note(store, job, attempt, NOW + timedelta(minutes=40), NOW + timedelta(minutes=6))
    assert "about 10:40 UTC" in later
    assert len(store.events_after(job.id, 0)) == said + 1


def test_a_time_across_midnight_is_compared_as_a_time(store: SqliteStore) -> None:
    job, attempt = pending_job(store)
    night = NOW.replace(hour=23, minute=58)
    assert "about 23:58 UTC" in note(store, job, attempt, night, night - timedelta(minutes=3))
    # 00:03 the next day is 5 minutes on, not 23 h 55 min back.
    assert "about 23:58 UTC" in note(store, job, attempt, night + timedelta(minutes=5), night)
