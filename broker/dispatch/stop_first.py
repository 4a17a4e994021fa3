"""A preempted job starts again only once its preempted attempt has stopped.

Reclaim (and a swap for a job that would have burst) marks the victim's attempt PREEMPTED and
requeues its job at once, then sends SIGTERM and leaves it the grace period to save its work.
Decided in that grace, the requeued job could start on other capacity (another partition, or a
burst to a cloud) while its old process still writes the checkpoint the new attempt resumes
from: two copies of one job, the new one reading a half-written save. Slurm likewise runs a
requeued job again only once the previous run has completed. The job waits, keeping its place
in the queue, until the broker sees the attempt stopped (`broker.fairshare.stopping`), or gives
up watching it (its cap past the grace).
"""

from __future__ import annotations

from datetime import datetime

from broker.fair_reclaim import Reclaimer
from broker.model import OTHERS_JOB, JobId, job_named_for
from broker.store import JobStore, StoreError


def jobs_still_stopping(reclaimer: Reclaimer, store: JobStore, now: datetime) -> dict[JobId, str]:
    """Queued jobs whose preempted attempt is not seen stopped yet, each with why it waits."""
    out: dict[JobId, str] = {}
    for s in reclaimer.unseen_stops(now):
        try:
            attempt = store.get_attempt(s.attempt_id)
            reader = store.get(attempt.job_id).tenant
        except StoreError:  # an attempt gone from the store holds no job back
            continue
        try:
            whose = job_named_for(s.for_job, store.get(s.for_job).tenant, reader)
        except StoreError:  # (whose it was cannot be told: named as another's)
            whose = OTHERS_JOB
        since = datetime.fromtimestamp(s.since, now.tzinfo).strftime("%H:%M:%S")
        out[attempt.job_id] = (
            f"waiting for its preempted attempt {attempt.id} on {s.partition} to stop (stopped "
            f"for {whose} at {since}, with a grace period to save its work): it starts "
            "again once that attempt has stopped"
        )
    return out
