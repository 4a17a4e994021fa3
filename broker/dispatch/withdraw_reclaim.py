"""An owner's job pending in a backend's own queue (Slurm) behind borrowed work takes its quota back.

Reclaim (`broker.fair_reclaim`) acts for the jobs a pass decides: one waiting in the broker, or
one bound for Slurm's queue behind borrowed work holding its quota (it waits in the broker
instead). A job already in Slurm's queue got there before its quota had room for it (its own
work held it), or before the borrowed work was there to read; Slurm would keep it behind that
work until the work ends. Every `requeue_scan_s`, with `withdraw_late`, each such job is given
the same reclaim, its own pending attempt not counted as work it runs there: when that preempts
borrowed work now (the same victims, within the same waste budget), the job is withdrawn (its
attempt ended broker-side, the backend's copy cancelled), the victims are booked to it (stored
before any is touched) and preempted, and it waits in the broker until their units are free, as
a job that reclaimed there does. While the budget delays the preemption, or nothing would be
preempted, it keeps its place in the backend's queue. A withdrawal always preempts for the job,
and the units stay booked to it until it has them, so it is never withdrawn twice for one need.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.base import Adapter, AdapterError, status_for
from broker.burst.snapshot import PassSnapshot
from broker.clock import Clock
from broker.dispatch.contract import DecisionMaker
from broker.dispatch.gang import is_gang_attempt
from broker.dispatch.records import gist
from broker.dispatch.withdraw import Background, cancel_withdrawn, pending_at_queue, withdraw
from broker.fair_reclaim import Taken
from broker.fairshare import onprem_partitions, resolve_share
from broker.fairshare.book import units_of
from broker.model import Attempt, AttemptState, Job, JobState, SiteId, job_named_for
from broker.serde_decision import victim_json
from broker.store import JobStore

log = logging.getLogger(__name__)

RESAY_MOVE_MIN = 10
"""Minutes a held-back reclaim's approximate time must move before the job's message says it again."""
_ABOUT = re.compile(r"about (\d\d):(\d\d) UTC")

Reclaimed = tuple[Job, list[dict[str, Any]]]
"""A withdrawn owner's job (requeued) and the borrowed attempts booked to it, to preempt (in
`broker.serde_decision.reclaim_json`'s form)."""


async def withdraw_to_reclaim(
    store: JobStore,
    planner: DecisionMaker,
    pending: Sequence[Attempt],
    snap: PassSnapshot,
    adapters: Mapping[SiteId, Adapter],
    clock: Clock,
    in_background: Background,
) -> list[Reclaimed]:
    """Withdraw the owners' jobs of `pending` (`pending_at_queue`) for which reclaim preempts now,
    as `snap` has it; the victims are booked to each (the caller stores the bookings, then
    preempts them)."""
    owners = _owners_pending(store, planner, pending)
    queued = frozenset(a.id for a in pending) - snap.started  # (started: no poll has said so yet)
    out: list[Reclaimed] = []
    for job, attempt in owners:
        free = _free(snap, attempt)
        if free is None:
            continue
        first = _take(planner, job, attempt, free, snap.now, commit=False, queued=queued)
        if not first.victims:
            _note_held_back(store, job, attempt, first, clock.now())
            continue
        adapter = adapters.get(attempt.site)
        if adapter is None or not await pending_at(adapter, attempt):
            continue  # it started at the backend (no poll has said so yet): it is no waiter
        # Read again after the awaits: a job the broker saw start, or cancelled, meanwhile stays.
        if store.get_attempt(attempt.id).state != AttemptState.PENDING:
            continue
        now = clock.now()
        taken = _take(planner, job, attempt, free, now, commit=False, queued=queued)
        if not taken.victims or taken.reason is None:
            continue
        victims = [victim_json(v) for v in taken.victims]
        requeued = withdraw(store, planner, job, attempt, taken.reason, clock, {"reclaim": victims})
        _take(planner, job, attempt, free, now, commit=True, queued=queued)  # as just said: booked, charged
        in_background(cancel_withdrawn(adapter, attempt))
        out.append((requeued, victims))
    return out


def _note_held_back(store: JobStore, job: Job, attempt: Attempt, taken: Taken, now: datetime) -> None:
    """The job's message says so while the waste budget holds its reclaim back (and about until
    when), and no longer once it does not. Said again when its wording changes or its time moves
    by `RESAY_MOVE_MIN` or more, not at each scan; a hold by the backend (`at SITE: held ...`)
    is left to say what it says."""
    said = f"pending in {attempt.site}'s queue until its quota is reclaimed"
    if job.message.startswith(f"at {attempt.site}: "):
        return
    if taken.reason is not None and taken.due_s is not None:
        due = datetime.fromtimestamp(taken.due_s, UTC)
        message = f"{said}, about {due:%H:%M} UTC: {taken.reason}"
    elif job.message.startswith(said):
        message = f"pending in {attempt.site}'s queue: its reclaim is no longer held back"
    else:
        return
    if gist(message) != gist(job.message) or _moved(job.message, message):
        store.record_many([(job.id, "waiting", message, {"site": attempt.site})], now)


def _moved(said: str, saying: str) -> bool:
    """The `about HH:MM UTC` of `saying` is `RESAY_MOVE_MIN` or more from that of `said` (times
    of day: 00:03 is 5 minutes after 23:58)."""
    a, b = _ABOUT.search(said), _ABOUT.search(saying)
    if a is None or b is None:
        return False
    diff = abs(int(a[1]) * 60 + int(a[2]) - int(b[1]) * 60 - int(b[2]))
    return min(diff, 1440 - diff) >= RESAY_MOVE_MIN


def _owners_pending(
    store: JobStore, planner: DecisionMaker, pending: Sequence[Attempt]
) -> list[tuple[Job, Attempt]]:
    """Jobs of `pending` on an on-prem partition where their tenant's quota could hold them
    (no backend is asked: most scans find none). A gang's nodes are not withdrawn one by one."""
    policy = planner.policy
    if not policy.document.fair_share.reclaim.enabled:
        return []
    parts = onprem_partitions(policy)
    out = []
    for attempt in pending:
        if attempt.offer.partition not in parts or is_gang_attempt(attempt):
            continue
        job = store.get(attempt.job_id)
        quota = resolve_share(policy, job.tenant).quota.get(attempt.offer.partition, 0)
        if job.state == JobState.PROVISIONING and quota >= units_of(job.spec):
            out.append((job, attempt))
    return out


def _free(snap: PassSnapshot, attempt: Attempt) -> int | None:
    """Units free on the attempt's partition as read now, less launches in flight there."""
    key = attempt.offer.partition
    for offer in snap.offers:
        if offer.site == attempt.site and offer.partition == key and offer.free is not None:
            return offer.free - snap.claimed.get(key, 0)
    return None


def _take(
    planner: DecisionMaker, job: Job, attempt: Attempt, free: int, now: datetime, *, commit: bool,
    queued: frozenset[str],
) -> Taken:
    """Reclaim for the job as for one waiting in the broker, its pending attempt running nothing,
    nor the others `queued` at their backends (stopping those would free nothing)."""
    fair = planner.fair
    owner = (job.tenant, units_of(job.spec))
    return fair.reclaimer.take(
        planner.policy, fair.book, fair.ratios, owner, attempt.offer.partition, free, now,
        for_job=job.id, commit=commit, not_holding=queued | {attempt.id},
    )


async def pending_at(adapter: Adapter, attempt: Attempt) -> bool:
    """The backend says the attempt still pends in its queue (an error: not known to)."""
    try:
        status = await asyncio.to_thread(status_for, adapter, str(attempt.backend_id), attempt.token)
    except AdapterError as exc:
        log.info("status of %s at %s unavailable: %s", attempt.backend_id, attempt.site, exc)
        return False
    return status.state == AttemptState.PENDING


async def withdraw_beside(
    store: JobStore,
    planner: DecisionMaker,
    owner: Job,
    victims: Sequence[Mapping[str, Any]],
    adapters: Mapping[SiteId, Adapter],
    clock: Clock,
) -> list[Job]:
    """Other jobs pending in a backend's queue on the partitions reclaimed for `owner`: the backend
    would start them on the units the victims free, ahead of the owner's job, which waits in the
    broker until they read free. Each goes back to the broker's queue (its age kept), where it waits
    while the units are booked to the owner (`Reclaimer.keep_off`); its backend copy is cancelled.
    Only what the backend says still pends: one that just started there is no waiter."""
    stopped = {str(v["attempt"]) for v in victims}  # (preempted: not to be withdrawn as well)
    parts = {store.get_attempt(a).offer.partition for a in stopped}
    out = []
    for attempt in pending_at_queue(store.live_attempts(), planner.queueing_sites()):
        if attempt.offer.partition not in parts or attempt.job_id == owner.id or attempt.id in stopped:
            continue
        adapter = adapters.get(attempt.site)
        if adapter is None or not await pending_at(adapter, attempt):
            continue
        # Read again after the await: a job the broker saw start, or cancelled, meanwhile stays.
        job = store.get(attempt.job_id)
        if job.state != JobState.PROVISIONING or store.get_attempt(attempt.id).state != AttemptState.PENDING:
            continue
        why = (f"the capacity reclaimed on {attempt.offer.partition} is the quota of "
               f"{job_named_for(owner.id, owner.tenant, job.tenant)}; it waits here until that job has it")
        out.append(withdraw(store, planner, job, attempt, why, clock))
        await cancel_withdrawn(adapter, attempt)
    return out
