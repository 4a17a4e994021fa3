"""Preempt borrowed on-prem work so an owner gets its guaranteed quota back (fair-share reclaim).

The broker records the preemption first (attempt PREEMPTED, job PREEMPTED then QUEUED with
who reclaimed it and why), then stops the process: SIGTERM, the policy's grace, SIGKILL.
The job keeps its history and its age, so it is next in its tenant's order, and may burst
when its max_wait says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adapters.base import Adapter, AdapterError
from broker.clock import Clock
from broker.dispatch.contract import DecisionMaker
from broker.model import AttemptState, AttemptStatus, Job, JobState, SiteId
from broker.store import JobStore

log = logging.getLogger(__name__)


async def preempt(
    victims: Sequence[Mapping[str, Any]],
    owner: Job,
    *,
    store: JobStore,
    adapters: Mapping[SiteId, Adapter],
    planner: DecisionMaker,
    clock: Clock,
    grace_s: float,
    on_freed: Callable[[], None],
) -> None:
    """Record and carry out the preemption of each victim attempt (ids from the fair-share decision)."""
    stops = []
    for v in victims:
        attempt = store.get_attempt(str(v["attempt"]))
        if attempt.state.terminal:
            continue
        now = clock.now()
        why = (
            f"preempted: borrowed capacity on {attempt.offer.partition} reclaimed for tenant "
            f"{owner.tenant}'s guaranteed quota (job {owner.id})"
        )
        attempt = store.update_attempt(attempt.id, now, state=AttemptState.PREEMPTED, error=why)
        job = store.get(attempt.job_id)
        planner.settle(job, attempt, AttemptStatus(state=AttemptState.PREEMPTED, message=why), store)
        if job.state in (JobState.PROVISIONING, JobState.RUNNING):
            data = {
                "attempt": attempt.id,
                "site": attempt.site,
                "reclaimed_by": owner.tenant,
                "for_job": owner.id,
            }
            store.transition(job.id, JobState.PREEMPTED, now, kind="preempted", message=why, data=data)
            store.transition(
                job.id, JobState.QUEUED, now, kind="requeued", message="requeued after fair-share reclaim"
            )
        adapter = adapters.get(attempt.site)
        if adapter is not None and attempt.backend_id is not None:
            stops.append(_stop(adapter, attempt.backend_id, attempt.token, grace_s))
    await asyncio.gather(*stops)
    on_freed()


async def _stop(adapter: Adapter, backend_id: str, token: str, grace_s: float) -> None:
    """SIGTERM, the grace period, then SIGKILL (adapters without a graceful stop just cancel)."""
    stop = getattr(adapter, "preempt", None)
    try:
        if stop is not None:
            await asyncio.to_thread(stop, backend_id, token, grace_s)
        else:
            await asyncio.to_thread(adapter.cancel, backend_id, token)
    except AdapterError as exc:  # the reconciler finds what is left
        log.warning("preempting %s failed: %s", backend_id, exc)
