"""What a client sees of a job beyond its stored row: placement, cost so far, start and end.

Pure: built from the job, its attempts, when it first ran and ended (`JobStore.run_times`),
the policy (for FX) and the clock's now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.burst.inputs import onprem_sites
from broker.burst.money import estimate_cost
from broker.model import Attempt, AttemptState, Job, JobState
from broker.policy import Policy

MAX_PAGE_SIZE = 1000
"""The most jobs one ListJobs page holds, whatever page size is asked for (`szb list` says so)."""
DEFAULT_PAGE_SIZE = 100
"""A ListJobs page's size when none is asked for (page_size 0)."""


@dataclass(frozen=True)
class JobDetails:
    instance_type: str = ""
    accelerator: str = ""
    accelerator_count: int = 0
    cost_so_far: float = 0.0
    """Price × elapsed time of every attempt a backend accepted (on-prem: while it ran), in `currency`."""
    currency: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    pending_reason: str = ""


def job_details(
    job: Job,
    attempts: Sequence[Attempt],
    run_times: tuple[datetime | None, datetime | None],
    policy: Policy,
    now: datetime,
) -> JobDetails:
    """The client's view of `job` (attempts may be empty for a job never placed)."""
    latest = attempts[-1] if attempts else None
    started, ended = run_times
    onprem = onprem_sites(policy)
    cost = 0.0
    for a in attempts:
        if a.backend_id is None:
            continue  # never accepted by a backend: nothing ran, nothing is billed
        begin = a.created_at
        if a.site in onprem:
            # On-prem capacity is priced while the job holds it, not while it pends in the
            # backend's own queue (Slurm); a cloud instance is billed from its launch.
            if a.state == AttemptState.PENDING:
                continue
            if started is not None and started > begin:
                begin = started  # (exact for its first run; a later attempt counts from its creation)
        end = a.updated_at if a.state.terminal else now
        if a is latest and a.state.terminal and ended is not None and begin <= ended < end:
            end = ended  # it ended while the broker was down: its run, not the time read back
        hours = max(0.0, (end - begin).total_seconds()) / 3600
        cost += estimate_cost(job.spec, a.offer, policy, hours=hours)
    if ended is None and job.state.terminal:
        ended = job.updated_at
    waiting = job.state in (JobState.QUEUED, JobState.PREEMPTED)
    return JobDetails(
        instance_type=latest.offer.instance_type if latest else "",
        accelerator=(latest.offer.accelerator or "") if latest else "",
        accelerator_count=job.spec.accelerator_count if latest and latest.offer.accelerator else 0,
        cost_so_far=round(cost, 4),
        currency=policy.currency,
        started_at=started,
        ended_at=ended,
        pending_reason=(job.message or "waiting for its first decision") if waiting else "",
    )
