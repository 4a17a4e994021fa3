"""How many times a job was interrupted on spot, against `burst.spot_max_interruptions`."""

from __future__ import annotations

from broker.model import Attempt, AttemptState, Job
from broker.policy import Policy
from broker.store import JobStore


def spot_interruptions(job: Job, store: JobStore, *, ending: Attempt | None = None) -> int:
    """The job's attempts a cloud ended as preempted while on a spot offer; `ending`, an attempt
    whose preemption is being recorded now, counts whatever its stored state."""
    others = (a for a in store.attempts_for(job.id) if ending is None or a.id != ending.id)
    return sum(1 for a in others if a.state == AttemptState.PREEMPTED and a.offer.spot) + (ending is not None)


def off_spot(job: Job, policy: Policy, store: JobStore) -> bool:
    """Whether the job used up its spot interruptions: it runs on-demand from now on. (Its
    attempt count bounds its interruptions, so most jobs cost no store read.)"""
    limit = policy.burst.spot_max_interruptions
    return job.attempts >= limit and spot_interruptions(job, store) >= limit
