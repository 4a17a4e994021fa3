"""A launch the store failed under (PostgreSQL restarting, a full disk).

The backend may have started the attempt while the store took none of the launch's writes: its
backend id, or the attempt's failure. The launch waits the outage out, then reads back what the
store holds and does what is left: submitting again by the attempt's token adopts what the
backend started (nothing runs twice), and a job whose attempt was closed but not moved on goes
back to the queue. Without this the launch's task died and the job stayed PROVISIONING for good.
"""

from __future__ import annotations

import logging
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from broker.clock import Clock
from broker.dispatch.spend import SpendLedger
from broker.model import Attempt, AttemptId, Job, JobId, JobState
from broker.store import JobStore, StoreUnavailable
from broker.store_outage import StoreOutageLog

log = logging.getLogger(__name__)

OUTAGE_RETRY_MAX_S = 5.0
"""The longest pause between a launch's tries while the store is out (it waits as long as it takes)."""

LAUNCHING = "launching attempts"
"""The kind of work the store outage log counts a launch's failures under."""


def through_store_outages(outage: StoreOutageLog) -> AsyncRetrying:
    """Retries of a launch for as long as the store is unavailable (backing off to 5 s);
    any other error is the launch's own to handle. A broker stopping cancels the wait."""

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            outage.failed(LAUNCHING, exc)

    return AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        wait=wait_exponential(multiplier=0.25, max=OUTAGE_RETRY_MAX_S),
        before_sleep=failed,
        reraise=True,
    )


def left_to_launch(
    store: JobStore, ledger: SpendLedger, clock: Clock, job_id: JobId, attempt_id: AttemptId
) -> tuple[Job, Attempt] | None:
    """What a launch cut short by the store still has to do, read back once the store answers:
    the (job, attempt) to submit again by its token, or None when nothing is left to launch
    (its start was recorded, or its attempt was closed; a job left waiting on a closed attempt
    is requeued here)."""
    job = store.get(job_id)
    attempt = store.get_attempt(attempt_id)
    if not attempt.state.terminal:
        if attempt.backend_id is not None and not job.state.terminal:
            return None  # its start was stored: polls follow it from here
        # Not started as far as the store knows (or its job ended: the launch stops what it started).
        return job, attempt
    ledger.settle(job, attempt, store, ran=attempt.backend_id is not None, ended=attempt.updated_at)
    live = [a for a in store.attempts_for(job.id) if not a.state.terminal]
    if job.state == JobState.PROVISIONING and not live:
        why = f"attempt {attempt.number} on {attempt.site} ended while the store was unavailable"
        store.transition(
            job.id, JobState.QUEUED, clock.now(), kind="requeued", message=why, expect=JobState.PROVISIONING
        )
        log.warning("job requeued: %s", why, extra=_fields(job, attempt))
    return None


def _fields(job: Job, attempt: Attempt) -> dict[str, Any]:
    return {"event": "requeued", "job_id": job.id, "tenant": job.tenant, "attempt_id": attempt.id}
