"""What a launch cut short by a store outage does once the store answers (`left_to_launch`),
on a real SQLite store: launch again by the token, leave a recorded start to the polls, or
requeue a job whose attempt was closed but which was never moved on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.clock import ManualClock
from broker.dispatch.launch_outage import left_to_launch
from broker.dispatch.spend import SpendLedger
from broker.model import Attempt, AttemptState, Job, JobSpec, JobState, Offer, Resources, SiteId, TenantId
from broker.policy import load_policy
from broker.store import SqliteStore, Submission
from tests.burst.conftest import write_policy

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
OFFER = Offer(site=SiteId("onprem"), instance_type="a800", accelerator="A800", count=1, price_per_hour=14)


def provisioning(store: SqliteStore) -> tuple[Job, Attempt]:
    spec = JobSpec(
        name="launching", command=("true",), runtime_estimate=timedelta(minutes=5),
        resources=Resources(accelerators={"count": 1, "any_of": ("A800",)}),
    )  # fmt: skip
    [(job, _)] = store.submit(TenantId("lab"), [Submission(spec=spec)], NOW)
    store.transition(job.id, JobState.PLACING, NOW, kind="placed", site="onprem")
    attempt = store.create_attempt(job.id, OFFER.site, OFFER, "tok-1", NOW)
    return store.transition(job.id, JobState.PROVISIONING, NOW, kind="attempt"), attempt


@pytest.fixture
def ledger(tmp_path: Path) -> SpendLedger:
    policy = load_policy(write_policy(tmp_path))
    return SpendLedger(lambda: policy, ManualClock(NOW))


def test_an_attempt_the_store_never_saw_start_is_launched_again(tmp_path: Path, ledger: SpendLedger) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    job, attempt = provisioning(store)
    left = left_to_launch(store, ledger, ManualClock(NOW), job.id, attempt.id)
    assert left is not None and left[1].id == attempt.id and left[1].token == "tok-1"


def test_a_recorded_start_is_left_to_the_polls(tmp_path: Path, ledger: SpendLedger) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    job, attempt = provisioning(store)
    store.update_attempt(attempt.id, NOW, backend_id="local-1")
    assert left_to_launch(store, ledger, ManualClock(NOW), job.id, attempt.id) is None
    assert store.get(job.id).state == JobState.PROVISIONING


def test_a_started_attempt_of_a_cancelled_job_is_launched_again_to_be_stopped(
    tmp_path: Path, ledger: SpendLedger
) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    job, attempt = provisioning(store)
    store.update_attempt(attempt.id, NOW, backend_id="local-1")
    store.transition(job.id, JobState.CANCELLED, NOW, kind="cancelled")
    left = left_to_launch(store, ledger, ManualClock(NOW), job.id, attempt.id)
    assert left is not None and left[0].state == JobState.CANCELLED


def test_a_job_whose_attempt_closed_but_never_moved_on_is_requeued(
    tmp_path: Path, ledger: SpendLedger
) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    job, attempt = provisioning(store)
    store.update_attempt(attempt.id, NOW, state=AttemptState.FAILED, error="CapacityError: no A800 free")
    later = ManualClock(NOW + timedelta(seconds=30))
    assert left_to_launch(store, ledger, later, job.id, attempt.id) is None
    requeued = store.get(job.id)
    assert requeued.state == JobState.QUEUED
    assert "attempt 1 on onprem ended while the store was unavailable" in requeued.message


def test_a_job_moved_on_after_its_attempt_closed_is_left_alone(tmp_path: Path, ledger: SpendLedger) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    job, attempt = provisioning(store)
    store.update_attempt(attempt.id, NOW, state=AttemptState.FAILED, error="CapacityError")
    store.transition(job.id, JobState.FAILED, NOW, kind="attempt_failed", message="gave up")
    assert left_to_launch(store, ledger, ManualClock(NOW), job.id, attempt.id) is None
    assert store.get(job.id).state == JobState.FAILED
