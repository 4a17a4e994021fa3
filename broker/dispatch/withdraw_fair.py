"""Jobs pending in a backend's own queue (Slurm) ahead of a job fair share owes first go back to
the broker's queue, so the broker's fair order, not the order of submission, says who starts next.

Slurm's queue without multifactor priority is first come, first served: a tenant that sent twenty
jobs there kept them ahead of a small tenant's one, which waited out several rounds of the flood.
When a job pends at a partition behind jobs of another tenant whose share ratio is at least
`burst.firm_deadline_share_gap` times its own tenant's (0: never), with a priority no higher than
its own, those jobs are withdrawn (their attempts ended broker-side, counting against nothing, the
backend's copies cancelled), and the next pass sends them again, behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from adapters.base import Adapter
from broker.burst.projection import PRIORITY_RANK
from broker.burst.snapshot import partition_key
from broker.clock import Clock
from broker.dispatch.contract import DecisionMaker
from broker.dispatch.withdraw import Background, cancel_withdrawn, withdraw
from broker.model import Attempt, AttemptState, Job, JobState, SiteId
from broker.store import JobStore

log = logging.getLogger(__name__)


def withdraw_unfair(
    store: JobStore,
    planner: DecisionMaker,
    pending: Sequence[Attempt],
    adapters: Mapping[SiteId, Adapter],
    clock: Clock,
    in_background: Background,
) -> list[Job]:
    """Withdraw the jobs of `pending` (`pending_at_queue`) pending ahead of a job fair share
    owes first; returns them requeued (the caller has them decided). Backends are told in the
    background."""
    gap = planner.policy.burst.firm_deadline_share_gap
    if gap <= 0:
        return []
    queues: dict[tuple[str, str], list[tuple[Attempt, Job]]] = {}
    for attempt in pending:
        job = store.get(attempt.job_id)
        if job.state == JobState.PROVISIONING:
            queues.setdefault((attempt.site, partition_key(attempt.offer)), []).append((attempt, job))
    out = []
    for queue in queues.values():
        queue.sort(key=lambda aj: aj[0].created_at)  # (the backend's own order: as sent)
        for i, (attempt, job) in enumerate(queue):
            owed = _owed(planner.fair.ratios, job, [j for _, j in queue[i + 1:]], gap)
            if owed is None or store.get_attempt(attempt.id).state != AttemptState.PENDING:
                continue  # (read again: one the backend started meanwhile stays)
            why = (f"{owed.tenant}'s job {owed.id} pends behind it, and {job.tenant} is further over "
                   "its fair share; sent again behind it")
            out.append(withdraw(store, planner, job, attempt, why, clock, {"for_job": owed.id}))
            adapter = adapters.get(attempt.site)
            if adapter is not None:
                in_background(cancel_withdrawn(adapter, attempt))
    return out


def _owed(ratios: Mapping[str, float], job: Job, behind: Sequence[Job], gap: float) -> Job | None:
    """The first job of `behind` that fair share puts before `job` (None: none)."""
    ahead = ratios.get(job.tenant, 0.0)
    rank = PRIORITY_RANK.get(job.spec.priority.value, 1)
    if ahead <= 0:
        return None
    for other in behind:
        if (other.tenant != job.tenant and PRIORITY_RANK.get(other.spec.priority.value, 1) <= rank
                and ahead >= gap * ratios.get(other.tenant, 0.0)):
            return other
    return None
