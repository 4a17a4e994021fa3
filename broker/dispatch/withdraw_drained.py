"""Jobs pending in the queue of a site an operator drained (`szb drain SITE`) come back to the broker.

A drain keeps new placements off a site; a job the broker had already sent to its Slurm queue and
that had not started there used to stay, and Slurm started it on the drained site as soon as units
freed. On the first scan after a drain (`requeue_scan_s`, at once when the drain is seen) each such
job is withdrawn as `dispatch.withdraw` withdraws a late one: its attempt ended broker-side (never
started: no exit code, counting against nothing), the job requeued with the drain's words, Slurm's
copy cancelled, and the next pass places it elsewhere or has it wait in the broker until the site
is undrained. A job the backend has started already, by the broker's record or its own status,
runs on: a drain is no preemption. A gang's nodes are not withdrawn one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adapters.base import Adapter
from broker.clock import Clock
from broker.dispatch.contract import DecisionMaker
from broker.dispatch.gang import is_gang_attempt
from broker.dispatch.withdraw import Background, cancel_withdrawn, withdraw
from broker.dispatch.withdraw_reclaim import pending_at
from broker.model import Attempt, AttemptState, Job, JobState, SiteId
from broker.store import JobStore


async def withdraw_drained(
    store: JobStore,
    planner: DecisionMaker,
    pending: Sequence[Attempt],
    drained: Mapping[SiteId, str],
    adapters: Mapping[SiteId, Adapter],
    clock: Clock,
    in_background: Background,
) -> list[Job]:
    """Withdraw the jobs of `pending` (`pending_at_queue`) at the `drained` sites (site -> who
    drained it and why); returns them requeued (the caller has them decided). Slurm's copies are
    cancelled in the background."""
    out = []
    for attempt in pending:
        words = drained.get(SiteId(attempt.site))
        adapter = adapters.get(SiteId(attempt.site))
        if words is None or adapter is None or is_gang_attempt(attempt):
            continue
        job = store.get(attempt.job_id)
        if job.state != JobState.PROVISIONING or not await pending_at(adapter, attempt):
            continue  # (ended, or started at the backend before any poll said so: it runs on)
        if store.get_attempt(attempt.id).state != AttemptState.PENDING:
            continue  # (read again after the await: one the broker saw start stays)
        why = f"site {attempt.site} {words}; it had not started there, so it is placed again"
        out.append(withdraw(store, planner, job, attempt, why, clock))
        in_background(cancel_withdrawn(adapter, attempt))
    return out
