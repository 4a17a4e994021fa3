"""Jobs pending in a backend's own queue (Slurm) are decided again, as the simulator decides a waiter.

A job projected to start on-prem within its max_wait is sent to a queueing backend at once (the
decision's "sent to its queue"). Should the work ahead then run past its estimate, the job is
projected late: the simulator, and the local executor whose waiters stay in the broker's queue,
then burst it at its last responsible moment, while a job already at Slurm used to pend there
past its deadline, never decided again. Every `requeue_scan_s` the dispatcher therefore decides
each such job again with the same pure decision, its start projected from what runs and what
pends at the backend before it (`LiveWaits.for_pending`). When that decision starts it
elsewhere now (a burst at its last responsible moment), the job is withdrawn: its attempt is
ended broker-side (it counts against nothing), the job requeued, the backend's copy cancelled,
and the next pass decides it as any waiter. Any other decision leaves it where it is: a job
keeps its place at the backend while its start is on time, or when nothing better is usable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from adapters.base import Adapter, AdapterError
from broker.burst import decide
from broker.burst.snapshot import PassSnapshot
from broker.clock import Clock
from broker.decision import Action, Decision
from broker.dispatch.contract import DecisionMaker
from broker.model import BROKER_SIDE, Attempt, AttemptState, AttemptStatus, Job, JobState, SiteId
from broker.store import JobMove, JobStore

log = logging.getLogger(__name__)


def pending_decision(
    planner: DecisionMaker, job: Job, attempt: Attempt, snap: PassSnapshot, store: JobStore
) -> Decision | None:
    """The decision for a job pending at a queueing backend, as if it waited in the broker's
    queue (None: not pending at one, or its wait is not projected). Nothing is recorded."""
    queueing = planner.queueing_sites()
    if attempt.site not in queueing:
        return None
    policy = planner.policy
    projected = planner.waits.for_pending(policy, job, snap, store, queueing)
    if projected is None:
        return None
    inputs = planner.inputs_for(
        job.tenant,
        snap,
        store,
        queued_since=job.created_at,
        pending_since=None,
        projected_wait=projected,
        launches_ahead=planner.waits.launches_ahead(policy, job.spec, job.tenant, job.created_at, job.id),
    )
    return decide(job.spec, job.tenant, snap.offers, policy, inputs)


Background = Callable[[Coroutine[Any, Any, None]], None]


def pending_at_queue(live: Sequence[Attempt], queueing: frozenset[str]) -> list[Attempt]:
    """The attempts pending in a queueing backend's own queue (sent there, not started yet)."""
    return [
        a for a in live if a.state == AttemptState.PENDING and a.backend_id is not None and a.site in queueing
    ]


def withdraw_late(
    store: JobStore,
    planner: DecisionMaker,
    pending: Sequence[Attempt],
    snap: PassSnapshot,
    adapters: Mapping[SiteId, Adapter],
    clock: Clock,
    in_background: Background,
) -> list[Job]:
    """Withdraw the jobs of `pending` (`pending_at_queue`) that are to start elsewhere now, as
    `snap` (read after `pending` was) has it; returns them requeued (the caller has them decided).
    Backends are told in the background."""
    out = []
    for attempt in pending:
        job = store.get(attempt.job_id)
        if job.state != JobState.PROVISIONING:
            continue
        decision = pending_decision(planner, job, attempt, snap, store)
        if decision is None or decision.action != Action.RUN or decision.offer is None:
            continue
        if decision.offer.site == attempt.site:
            continue  # (it would be sent where it already pends)
        # Read again after the snapshot's await: a job the backend started meanwhile stays.
        if store.get_attempt(attempt.id).state != AttemptState.PENDING:
            continue
        out.append(withdraw(store, planner, job, attempt, decision.summary, clock))
        adapter = adapters.get(attempt.site)
        if adapter is not None:
            in_background(cancel_withdrawn(adapter, attempt))
    return out


def withdraw(
    store: JobStore,
    planner: DecisionMaker,
    job: Job,
    attempt: Attempt,
    reason: str,
    clock: Clock,
    data: Mapping[str, Any] | None = None,
) -> Job:
    """Take a job pending at its backend back into the broker's queue (`reason`: why), its attempt
    ended broker-side; returns it requeued. The caller cancels the backend's copy."""
    now = clock.now()
    why = f"withdrawn from {attempt.site}'s queue: {reason}"
    move = JobMove(
        JobState.QUEUED,
        "requeued",
        why,
        data={"attempt": attempt.id, "site": attempt.site, "backend_id": attempt.backend_id, **(data or {})},
        expect=JobState.PROVISIONING,
    )
    ended = store.update_attempt(
        attempt.id, now, state=AttemptState.CANCELLED, error=BROKER_SIDE + why, moves=[move]
    )
    planner.settle(job, ended, AttemptStatus(state=AttemptState.CANCELLED, message=why), store)
    log.info("job %s %s", job.id, why, extra={"event": "withdrawn", "job_id": job.id, "site": attempt.site})
    return store.get(job.id)


async def cancel_withdrawn(adapter: Adapter, attempt: Attempt) -> None:
    """Cancel the backend's copy of a withdrawn attempt (a failure is the reconciler's to mend)."""
    try:
        await asyncio.to_thread(adapter.cancel, str(attempt.backend_id), attempt.token)
    except AdapterError as exc:  # the reconciler cancels what a broker no longer runs
        log.warning("cancelling withdrawn %s at %s failed: %s", attempt.backend_id, attempt.site, exc)
