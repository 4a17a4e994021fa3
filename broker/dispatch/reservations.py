"""A burst's cash reservation the store refused: which limit refused it, and the job's way back."""

from __future__ import annotations

from datetime import datetime

from broker.burst.money import TenantMoney
from broker.model import BROKER_SIDE, Attempt, AttemptState, Job, JobState
from broker.store import JobStore


def reservation_refusal(money: TenantMoney, cash: float) -> str:
    """Which limit refused a burst's cash reservation, from the money read after the refusal."""
    if money.budget_left is not None and cash > money.budget_left + 1e-9:
        return "the tenant's budget would be exceeded"
    return "the global burst cap is reached"  # (no figures: they would tell every tenant's spend)


def refused_reservation(store: JobStore, job: Job, attempt: Attempt, why: str, now: datetime) -> None:
    """Close an attempt whose reservation the store refused and requeue its job to wait on-prem."""
    # The decision read money another burst has taken since: the broker's own doing, so it counts
    # as no attempt of the job (`used_an_attempt`, `_give_up_reason`) nor of the route (`route_states`).
    store.update_attempt(attempt.id, now, state=AttemptState.CANCELLED, error=BROKER_SIDE + why)
    message = f"not bursting to {attempt.site}: {why}; waiting on-prem"
    # (`expect`: a job an API replica cancelled meanwhile stays cancelled)
    store.transition(job.id, JobState.QUEUED, now, kind="budget", message=message, expect=JobState.PLACING)
