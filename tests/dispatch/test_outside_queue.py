"""Another Slurm user's pending jobs stand in the projected line (found by a held-out review).

The live projection put only the broker's own jobs pending at Slurm ahead of a new job; work
another user had pending counted for nothing, so with the partition promised to an outside
10-hour job once the running work ends in 10 minutes, a new job was projected to start in 10
minutes and sent to Slurm's queue, where it waited the 10 hours. The reading's queue (`queued`,
in Slurm's order) now goes into the line, the broker's own pending jobs at their places in it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker.burst.snapshot import PassSnapshot
from broker.dispatch.waits import LiveWaits
from broker.model import Attempt, AttemptState, JobState, SiteId, TenantId
from broker.policy import Policy
from broker.store import JobStore, Submission
from tests.dispatch.test_live_explain import policy, store
from tests.store.test_runtime_ratios import A800, NOW, gpu_job

__all__ = ["policy", "store"]  # (the fixtures this file shares)

HOURS_10 = 10 * 3600.0
QUEUEING = frozenset({SiteId("onprem")})


def snapshot(queued: tuple[tuple[int, float, str], ...]) -> PassSnapshot:
    """All 8 A800s busy with another user's work for 10 more minutes, and `queued` pending."""
    offer = A800.model_copy(update={"free": 0, "expected_wait_s": 600.0, "releases": ((600.0, 8),),
                                    "queued": queued})
    return PassSnapshot(now=NOW, offers=[offer], capacity_total={A800.partition: 8})


def pending_at_slurm(store: JobStore, backend_id: str) -> Attempt:
    """A 1-hour, 8-GPU broker job pending in Slurm's queue as `backend_id`."""
    [(job, _)] = store.submit(TenantId("lab"), [Submission(gpu_job("sent", 1.0))], NOW - timedelta(minutes=5))
    for state in (JobState.PLACING, JobState.PROVISIONING):
        store.transition(job.id, state, NOW)
    attempt = store.create_attempt(job.id, A800.site, A800, "tok-" + backend_id, NOW)
    store.update_attempt(attempt.id, NOW, backend_id=backend_id, state=AttemptState.PENDING)
    return store.get_attempt(attempt.id)


def test_another_users_pending_job_starts_before_a_new_one(store: JobStore, policy: Policy) -> None:
    snap = snapshot(((8, HOURS_10, ""),))
    waits = LiveWaits()
    waits.noted(snap, [])
    projected = waits.for_job(policy, gpu_job("new", 1.0), snap, store, QUEUEING)
    # The outside job starts when the running work ends (10 min) and holds all 8 for 10 hours.
    assert projected == {A800.partition: pytest.approx(600.0 + HOURS_10)}


def test_the_broker_job_pending_at_slurm_stands_where_slurm_orders_it(
    store: JobStore, policy: Policy
) -> None:
    mine = pending_at_slurm(store, "17")
    # Slurm starts an outside 10-hour job first, then ours (1 h), then an outside 2-hour one.
    snap = snapshot(((8, HOURS_10, ""), (8, 3600.0, "17"), (8, 7200.0, "")))
    waits = LiveWaits()
    waits.noted(snap, [mine])
    job = store.get(mine.job_id)
    ours = waits.for_pending(policy, job, snap, store, QUEUEING)
    assert ours == {A800.partition: pytest.approx(600.0 + HOURS_10)}  # not behind the 2-hour one
    new = waits.for_job(policy, gpu_job("new", 1.0), snap, store, QUEUEING)
    assert new == {A800.partition: pytest.approx(600.0 + HOURS_10 + 3600.0 + 7200.0)}
