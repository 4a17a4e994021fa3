"""A job pending in a backend's own queue (Slurm) ahead of an idle tenant's job goes back to the
broker's queue, so the broker's fair order, not the order of submission, says who starts next.

Slurm's queue without multifactor priority is first come, first served: a tenant that sent twenty
jobs there kept them ahead of a small tenant's one, which waited out several rounds of the flood.
The job owed first (`owed`) is the only work its tenant has at that partition (nothing running,
nothing else pending: a tenant once served, or queueing several, waits its turn as sent); a job
ahead of it is withdrawn when its own tenant runs work there, its priority is no higher, and that
tenant's share ratio is at least `burst.firm_deadline_share_gap` times the owed tenant's (0:
never). Withdrawn attempts end broker-side (counting against nothing, the backend's copies
cancelled) and the next pass sends them again, behind it. A job the backend has started already,
by the capacity reading or its own status, stays. Once the owed job runs, or its tenant has other
work there, nothing more is withdrawn for it: no job is moved back and forth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adapters.base import Adapter
from broker.burst.projection import PRIORITY_RANK
from broker.burst.snapshot import PassSnapshot, partition_key
from broker.clock import Clock
from broker.dispatch.contract import DecisionMaker
from broker.dispatch.withdraw import Background, cancel_withdrawn, withdraw
from broker.dispatch.withdraw_reclaim import pending_at
from broker.model import Attempt, AttemptState, Job, JobId, JobState, SiteId, TenantId
from broker.store import JobStore

Queue = list[tuple[Attempt, Job]]


async def withdraw_unfair(
    store: JobStore,
    planner: DecisionMaker,
    live: Sequence[Attempt],
    pending: Sequence[Attempt],
    snap: PassSnapshot,
    adapters: Mapping[SiteId, Adapter],
    clock: Clock,
    in_background: Background,
) -> list[Job]:
    """Withdraw the jobs of `pending` (`pending_at_queue`) pending ahead of an idle tenant's job
    (see the module); returns them requeued (the caller has them decided). Backends are told in
    the background."""
    gap = planner.policy.burst.firm_deadline_share_gap
    if gap <= 0:
        return []
    queues: dict[tuple[str, str], Queue] = {}
    for attempt in pending:
        job = store.get(attempt.job_id)
        if job.state == JobState.PROVISIONING and attempt.backend_id not in snap.started:
            queues.setdefault((attempt.site, partition_key(attempt.offer)), []).append((attempt, job))
    out = []
    for (site, part), queue in queues.items():
        if len({job.tenant for _, job in queue}) < 2:
            continue  # (one tenant's jobs keep their order: no store read for their partition)
        here = [a for a in live if a.site == site and partition_key(a.offer) == part]
        running = {a.job_id for a in here if a.state == AttemptState.RUNNING}
        known = {a.id: job.tenant for a, job in queue}  # (read above; the running ones are read here)
        tenants = {a.job_id: known.get(a.id) or store.get(a.job_id).tenant for a in here}
        for attempt, job in _ahead(planner.fair.ratios, queue, here, running, tenants, gap):
            adapter = adapters.get(attempt.site)
            if adapter is None or not await pending_at(adapter, attempt):
                continue  # it started at the backend (no poll has said so yet)
            if store.get_attempt(attempt.id).state != AttemptState.PENDING:
                continue  # (read again after the await: one the broker saw start stays)
            why = "a tenant with no other work here pends behind it; sent again behind that job"
            out.append(withdraw(store, planner, job, attempt, why, clock))
            in_background(cancel_withdrawn(adapter, attempt))
    return out


def _ahead(
    ratios: Mapping[str, float],
    queue: Queue,
    here: Sequence[Attempt],
    running: set[JobId],
    tenants: Mapping[JobId, TenantId],
    gap: float,
) -> Queue:
    """The jobs of `queue` to withdraw for its first owed job (none when no job is owed)."""
    queue = sorted(queue, key=lambda aj: aj[0].created_at)  # (the backend's own order: as sent)
    users = {tenants[j] for j in running}
    for k, (_, owed) in enumerate(queue):
        if sum(1 for a in here if tenants[a.job_id] == owed.tenant) != 1:
            continue  # its tenant has other work here: it waits its turn as sent
        rank = PRIORITY_RANK.get(owed.spec.priority.value, 1)
        floor = gap * ratios.get(owed.tenant, 0.0)
        ahead = [
            (a, j) for a, j in queue[:k]
            if j.tenant != owed.tenant and j.tenant in users
            and PRIORITY_RANK.get(j.spec.priority.value, 1) >= rank
            and ratios.get(j.tenant, 0.0) >= floor and ratios.get(j.tenant, 0.0) > 0
        ]
        if ahead:
            return ahead
    return []
