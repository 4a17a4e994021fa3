"""A burst whose reservation is refused goes back to the queue, unless an API replica cancelled
it since it was placed (issue 13 review): the requeue was the illegal CANCELLED -> QUEUED, which
failed the scheduler's whole pass. On a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.dispatch.reservations import refused_reservation
from broker.model import AttemptState, JobSpec, JobState, Offer, Resources, SiteId, TenantId
from broker.store import SqliteStore, Submission

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
OFFER = Offer(site=SiteId("aws"), instance_type="g5", accelerator="A10G", count=1, price_per_hour=1.2)


def test_a_refused_reservation_leaves_a_job_cancelled_meanwhile_cancelled(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    spec = JobSpec(
        name="burst", command=("true",), runtime_estimate=timedelta(minutes=5),
        resources=Resources(accelerators={"count": 1, "any_of": ("A10G",)}),
    )  # fmt: skip
    [(job, _)] = store.submit(TenantId("lab"), [Submission(spec=spec)], NOW)
    job = store.transition(job.id, JobState.PLACING, NOW, kind="placed", site="aws")
    attempt = store.create_attempt(job.id, OFFER.site, OFFER, "tok-1", NOW)
    store.transition(job.id, JobState.CANCELLED, NOW, kind="cancelled")  # the replica's cancel
    refused_reservation(store, job, attempt, "the global burst cap is reached", NOW)
    assert store.get(job.id).state == JobState.CANCELLED
    assert store.get_attempt(attempt.id).state == AttemptState.CANCELLED


def test_a_refused_reservation_requeues_the_placed_job(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    spec = JobSpec(name="burst", command=("true",), runtime_estimate=timedelta(minutes=5))
    [(job, _)] = store.submit(TenantId("lab"), [Submission(spec=spec)], NOW)
    job = store.transition(job.id, JobState.PLACING, NOW, kind="placed", site="aws")
    attempt = store.create_attempt(job.id, OFFER.site, OFFER, "tok-1", NOW)
    refused_reservation(store, job, attempt, "the global burst cap is reached", NOW)
    requeued = store.get(job.id)
    assert requeued.state == JobState.QUEUED and "global burst cap" in requeued.message
