"""Fair-share ordering of queued on-prem work across tenants. Pure: no I/O, no clock.

1. Within a tenant, jobs go by priority, then deadline (arrival + max_wait, when known),
   then age (then id).
2. A tenant's jobs that fit in what is left of its guaranteed quota on a partition they
   can run on are *in quota*; the rest is *borrowed* work. Every in-quota job goes ahead of
   every borrowed job. A job that fits the quota whole but not what its tenant's own work
   leaves of it is *owed* that quota: the tenant's jobs behind it are borrowed work there.
3. Within each of the two tiers, tenants take turns by weighted dominant share: the tenant
   whose largest share of on-prem capacity (accelerators, CPUs or memory), divided by its
   weight, is lowest goes next (ties: accelerator share, then CPU/memory share, then tenant
   id). Each job put in order is charged to its tenant, so one pass interleaves tenants the
   way their shares would evolve if the jobs started (Armada's and Kueue's DRF).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from broker.burst.claims import owes
from broker.fairshare.shares import Share
from broker.fairshare.usage import ZERO, Demand
from broker.model import Priority

_PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


@dataclass(frozen=True, slots=True)
class QueuedWork:
    """One queued job as the ordering sees it."""

    job_id: str
    tenant: str
    priority: Priority
    created_at: datetime
    demand: Demand
    units: int
    """What the job takes from a quota: accelerators, or cores when it needs none."""
    partitions: tuple[str, ...] = ()
    """On-prem partitions (`site/partition`) that could run it; empty: none can."""
    due: datetime | None = None
    """When it must start (arrival + max_wait); within a priority, earlier deadlines go first."""


@dataclass(frozen=True, slots=True)
class Queued:
    """A tenant's work sent to a backend's queue (Slurm's) that does not run yet."""

    units: Mapping[str, int] = field(default_factory=dict)
    """Quota units it will hold, per partition: counted against the quota, as if held."""
    demand: Demand = ZERO
    """What it asks for: charged in the order as a queued job is (it is ahead of them), never usage."""

    def plus(self, partition: str, units: int, demand: Demand) -> Queued:
        return Queued({**self.units, partition: self.units.get(partition, 0) + units}, self.demand + demand)


@dataclass(frozen=True, slots=True)
class TenantState:
    """A tenant's entitlement and where it stands now."""

    share: Share = field(default_factory=Share)
    usage: Demand = ZERO
    """Usage as `broker.fairshare.usage.usage` computes it."""
    in_use: Mapping[str, int] = field(default_factory=dict)
    """Quota units its running on-prem work holds, per partition."""
    queued: Queued = field(default_factory=Queued)
    """Its on-prem work waiting in a backend's queue (in neither `usage` nor `in_use`)."""


@dataclass(frozen=True, slots=True)
class Standing:
    """Where one job stands in the fair-share order."""

    job_id: str
    tenant: str
    position: int
    """1-based place in the whole order."""
    tenant_position: int
    """1-based place among its tenant's jobs."""
    in_quota: bool
    ratio: float
    """The tenant's dominant share of on-prem capacity over its entitled share (1.0 = exactly fair)."""
    may_run_onprem: bool
    """False for borrowed work of a tenant that may not borrow."""
    owed: bool = False
    """Borrowed only because its tenant's own work holds the quota it fits in: what that work
    frees is kept for it (a hold), and its tenant's later jobs do not take that quota first."""
    onprem: bool = True
    """Some on-prem partition could run it (`QueuedWork.partitions`); False: no on-prem share
    applies to it (a cloud-only policy, or hardware only clouds sell), so none is borrowed."""

    def text(self) -> str:
        if not self.onprem:
            return "fair share: no on-prem partition can run it, so no on-prem share applies"
        where = "within its quota" if self.in_quota else "borrowed"
        return (
            f"{ordinal(self.position)} in tenant order ({where}); tenant {self.tenant} at "
            f"{self.ratio:.1f}× its share"
        )


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def dominant(usage: Demand, capacity: Demand) -> float:
    return max(usage.shares(capacity))


def entitled(tenants: Mapping[str, TenantState], active: set[str]) -> dict[str, float]:
    """Each active tenant's entitled fraction of on-prem capacity: its weight over the active weights."""
    total = sum(tenants[t].share.weight if t in tenants else 1.0 for t in active)
    return {t: (tenants[t].share.weight if t in tenants else 1.0) / total for t in active} if total else {}


def share_ratios(tenants: Mapping[str, TenantState], active: set[str], capacity: Demand) -> dict[str, float]:
    """Dominant share used over share entitled, per active tenant."""
    ent = entitled(tenants, active)
    return {
        t: dominant(tenants[t].usage if t in tenants else ZERO, capacity) / e if e else 0.0
        for t, e in ent.items()
    }


def held_back(ratios: Mapping[str, float], tenant: str, gap: float) -> bool:
    """Another active tenant's share ratio is at least `gap` times `tenant`'s (and above 0): the
    tenant waits for capacity fair share owes it, held by a tenant far further over its share.
    `gap` 0: never."""
    return any(owes(ratios, t, tenant, gap) for t in ratios if t != tenant)


def _key(usage: Demand, capacity: Demand, weight: float, tenant: str) -> tuple[float, float, float, str]:
    acc, cpu, mem = usage.shares(capacity)
    return (max(acc, cpu, mem) / weight, acc / weight, max(cpu, mem) / weight, tenant)


def order(
    work: Sequence[QueuedWork],
    tenants: Mapping[str, TenantState],
    capacity: Demand,
    *,
    charge: float = 1.0,
) -> list[Standing]:
    """The queue in fair-share order with each job's standing (unknown tenants get defaults)."""
    return list(standings(work, tenants, capacity, charge=charge))


def _tiers(
    by_tenant: Mapping[str, list[QueuedWork]], states: Mapping[str, TenantState]
) -> tuple[tuple[dict[str, list[QueuedWork]], dict[str, list[QueuedWork]]], set[str]]:
    """Each tenant's jobs in its own order, split into in-quota and borrowed work; and the ids of
    borrowed jobs owed their quota (`Standing.owed`)."""
    tiers: tuple[dict[str, list[QueuedWork]], dict[str, list[QueuedWork]]] = ({}, {})
    owed: set[str] = set()
    for tenant, jobs in by_tenant.items():
        jobs.sort(key=lambda w: (_PRIORITY_RANK[w.priority], w.due or w.created_at, w.created_at, w.job_id))
        st = states[tenant]
        # Work waiting in a backend's queue takes its quota as it will once it runs: counted free,
        # the tenant's next jobs would be sent there past its quota (or reclaim for it twice).
        held = {p: st.in_use.get(p, 0) + st.queued.units.get(p, 0) for p in st.share.quota}
        left = {p: q - held[p] for p, q in st.share.quota.items()}
        for w in jobs:
            fits = next((p for p in w.partitions if p in left and left[p] >= w.units), None)
            if fits is not None:
                left[fits] -= w.units
                tiers[0].setdefault(tenant, []).append(w)
                continue
            # No room left in the quota, but the job fits the quota whole: its tenant's own work
            # holds it. The tenant's later (lower priority, younger) jobs must not take that quota
            # as it frees, or a stream of small ones would keep the older big job waiting for ever.
            quota = st.share.quota
            owed_on = max((p for p in w.partitions if p in left and w.units <= quota[p]),
                          key=lambda p: left[p], default=None)
            if owed_on is not None:
                left[owed_on] = min(left[owed_on], 0)
                owed.add(w.job_id)
            tiers[1].setdefault(tenant, []).append(w)
    return tiers, owed


def standings(
    work: Sequence[QueuedWork],
    tenants: Mapping[str, TenantState],
    capacity: Demand,
    *,
    charge: float = 1.0,
) -> Iterator[Standing]:
    """`order`, one standing at a time: a reader that needs only the first few (the simulator's
    capacity event) stops there, and the rest is never put in order."""
    by_tenant: dict[str, list[QueuedWork]] = {}
    for w in work:
        by_tenant.setdefault(w.tenant, []).append(w)
    states = {t: tenants.get(t, TenantState()) for t in by_tenant}
    active = set(by_tenant) | {t for t, s in tenants.items() if dominant(s.usage, capacity) > 0}
    ratios = share_ratios({**tenants, **states}, active, capacity)

    tiers, owed = _tiers(by_tenant, states)

    usage = {t: s.usage + s.queued.demand.scaled(charge) for t, s in states.items()}
    position = 0
    seen: dict[str, int] = {}
    for tier, queues in enumerate(tiers):
        heap = [(_key(usage[t], capacity, states[t].share.weight, t), t) for t in queues]
        heapq.heapify(heap)
        heads = dict.fromkeys(queues, 0)
        while heap:
            _, t = heapq.heappop(heap)
            w = queues[t][heads[t]]
            heads[t] += 1
            seen[t] = seen.get(t, 0) + 1
            in_quota = tier == 0
            position += 1
            yield Standing(
                job_id=w.job_id,
                tenant=t,
                position=position,
                tenant_position=seen[t],
                in_quota=in_quota,
                ratio=ratios.get(t, 0.0),
                may_run_onprem=in_quota or states[t].share.may_borrow or not w.partitions,
                owed=w.job_id in owed,
                onprem=bool(w.partitions),
            )
            usage[t] = usage[t] + w.demand.scaled(charge)
            if heads[t] < len(queues[t]):
                heapq.heappush(heap, (_key(usage[t], capacity, states[t].share.weight, t), t))
