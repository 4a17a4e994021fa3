"""Preempt borrowed on-prem work so an owner gets its guaranteed quota back (fair-share reclaim).

The broker records the preemption first (attempt PREEMPTED, job PREEMPTED then QUEUED with
who reclaimed it and why), then stops the process: SIGTERM, the policy's grace, SIGKILL.
The job keeps its history and its age, so it is next in its tenant's order, and may burst
when its max_wait says so. Each victim's backend status is then read until it has stopped (a Slurm
job stops at its cut time limit, minutes later), which `on_stopped` reports: reclaim keeps its
units for the owner's job until then (`broker.fairshare.stopping`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.base import Adapter, AdapterError, NotFoundError, status_for
from broker.clock import Clock
from broker.dispatch.contract import DecisionMaker
from broker.dispatch.ended_first import ended_first
from broker.fairshare.stopping import STOP_CAP_S
from broker.model import Attempt, AttemptState, AttemptStatus, Job, JobState, SiteId, job_named_for
from broker.store import JobStore

log = logging.getLogger(__name__)

WATCH_POLL_S = 1.0
"""How often a stopping victim's backend status is read."""


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
    on_stopped: Callable[[str], None],
    record: Callable[[Attempt, AttemptStatus], None],
    lost: Callable[[str, str, float], None] = lambda site, tenant, unit_s: None,
) -> None:
    """Record and carry out the preemption of each victim attempt (ids from the fair-share decision);
    `on_stopped(attempt id)` once its backend says it stopped (at once when nothing runs). A victim
    that ended on its own since the last poll is not preempted: `record` records its result.
    `lost(site, tenant, unit-seconds)`: the work a preemption lost, once its job's event records it."""
    stops = []
    watches = []
    for v in victims:
        attempt = store.get_attempt(str(v["attempt"]))
        for done, status in await ended_first([attempt], adapters, planner.needs_agent):
            record(done, status)  # its result stands: preempted, it would run again
            attempt = store.get_attempt(attempt.id)
        if attempt.state.terminal:
            on_stopped(attempt.id)
            continue
        now = clock.now()
        job = store.get(attempt.job_id)
        swap = v.get("why")  # stopped for a job that would have burst (burst.preempt_patient)
        why = str(swap) if swap else (
            f"preempted: borrowed capacity on {attempt.offer.partition} reclaimed for the guaranteed "
            f"quota of {job_named_for(owner.id, owner.tenant, job.tenant)}"
        ) + (f"; work lost: {float(v['lost_unit_s']) / 3600:.2f} unit-hours" if v.get("lost_unit_s") else "")
        attempt = store.update_attempt(attempt.id, now, state=AttemptState.PREEMPTED, error=why)
        job = store.get(attempt.job_id)
        planner.settle(job, attempt, AttemptStatus(state=AttemptState.PREEMPTED, message=why), store)
        if job.state in (JobState.PROVISIONING, JobState.RUNNING):
            _requeue(store, job, attempt, owner, v, why, now, lost)
        adapter = adapters.get(attempt.site)
        if adapter is not None and attempt.backend_id is not None:
            stops.append(_stop(adapter, attempt.backend_id, attempt.token, grace_s))
            within_s = grace_s + STOP_CAP_S
            watches.append(watch_stop(adapter, attempt, within_s, on_stopped))
        else:
            on_stopped(attempt.id)
    await asyncio.gather(*stops)
    on_freed()
    await asyncio.gather(*watches)


def _requeue(
    store: JobStore,
    job: Job,
    attempt: Attempt,
    owner: Job,
    v: Mapping[str, Any],
    why: str,
    now: datetime,
    lost: Callable[[str, str, float], None],
) -> None:
    """The victim's job: its preempted event (who it was stopped for, the work lost), then queued again."""
    swap = v.get("why")
    data = {
        "attempt": attempt.id,
        "site": attempt.site,
        ("stopped_by" if swap else "reclaimed_by"): owner.tenant,
        "for_job": owner.id,
        **({"lost_unit_s": v["lost_unit_s"]} if v.get("lost_unit_s") else {}),
    }
    store.transition(job.id, JobState.PREEMPTED, now, kind="preempted", message=why, data=data)
    if v.get("lost_unit_s"):
        lost(attempt.site, job.tenant, float(v["lost_unit_s"]))
    again = (f"requeued: stopped for {job_named_for(owner.id, owner.tenant, job.tenant)}" if swap
             else "requeued after fair-share reclaim")
    store.transition(job.id, JobState.QUEUED, now, kind="requeued", message=again)


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


async def watch_stop(
    adapter: Adapter, attempt: Attempt, within_s: float, on_stopped: Callable[[str], None]
) -> None:
    """Read a preempted attempt's status until it has stopped, then say so; give up after
    `within_s` (reclaim then reports it and may go on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        if await stopped_now(adapter, attempt):
            on_stopped(attempt.id)
            return
        if loop.time() >= deadline:
            return
        await asyncio.sleep(WATCH_POLL_S)


async def stopped_now(adapter: Adapter, attempt: Attempt) -> bool:
    """One read of a preempted attempt's backend status: it has stopped, or is gone (an error:
    not yet known)."""
    backend_id = str(attempt.backend_id)
    try:
        return (await asyncio.to_thread(status_for, adapter, backend_id, attempt.token)).state.terminal
    except NotFoundError:  # purged, or never known any more
        return True
    except AdapterError as exc:  # the next read may answer
        log.debug("status of stopping %s: %s", backend_id, exc)
        return False
