"""The shell around reclaim: one scheduler's waste budget and the borrowed work still stopping.

`FairQueue.reclaim_for` asks `Reclaimer.take` which borrowed attempts on a partition to preempt
for a job within its quota (`broker.fairshare.reclaim` chooses them), and what the job's reasons
say first: that they are preempted for it, or that they are not, since preempting them would
lose more work than the waste budget has left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.decision import ReclaimVictim
from broker.fairshare import onprem_partitions, partition_units, resolve_share
from broker.fairshare.book import FairShareBook
from broker.fairshare.reclaim import Running, Victim, over_budget, victims
from broker.policy import Policy


@dataclass(frozen=True, slots=True)
class Taken:
    """What reclaim does for one waiting job: the attempts to preempt, and why it says so."""

    victims: tuple[ReclaimVictim, ...] = ()
    reason: str | None = None
    """The job's first reason: the preemption, or the budget that keeps it from one (None: neither)."""


class Reclaimer:
    """Recent preemptions per partition (the waste budget) and preempted work still stopping."""

    def __init__(self) -> None:
        self._wasted: deque[tuple[float, str, float]] = deque()
        """(time, partition, unit-seconds) of recent preemptions, for the waste budget."""
        self._freeing: dict[str, list[tuple[float, int]]] = {}
        """Units of preempted work still shutting down, per partition (until a time)."""

    def take(
        self,
        policy: Policy,
        book: FairShareBook,
        ratios: Mapping[str, float],
        owner: tuple[str, int],
        partition: str,
        free: int,
        now: datetime,
        *,
        commit: bool = True,
    ) -> Taken:
        """Borrowed attempts to preempt on `partition` so the owner's in-quota job of `owner[1]`
        units gets its quota back (`commit` False: only say which; nothing is booked)."""
        rc = policy.document.fair_share.reclaim
        part = onprem_partitions(policy).get(partition)
        if not rc.enabled or part is None:
            return Taken()
        tenant, need = owner
        t, window = now.timestamp(), rc.window.total_seconds()
        while self._wasted and self._wasted[0][0] < t - window:
            self._wasted.popleft()
        freeing = [(until, n) for until, n in self._freeing.get(partition, []) if until > t]
        self._freeing[partition] = freeing
        budget = rc.max_capacity_share * partition_units(part) * window
        left = budget - sum(w for _, p, w in self._wasted if p == partition)
        running = [
            Running(aid, h.tenant, h.units, h.start, h.checkpoint_s)
            for aid, h in book.live.items()
            if h.partition == partition
        ]
        tenants = {tenant, *(r.tenant for r in running)}  # the owner's quota bounds what it takes back
        quotas = {t: resolve_share(policy, t).quota.get(partition, 0) for t in tenants}
        free += sum(n for _, n in freeing)
        chosen = victims(
            owner=tenant, need=need, free=free, running=running, quotas=quotas, ratios=ratios,
            waste_left=left, now=now,
        )
        if not chosen:
            short = over_budget(owner=tenant, need=need, free=free, running=running, quotas=quotas, now=now)
            return Taken(reason=None if short is None else refused(policy, partition, short, left))
        if commit:
            until = t + rc.grace.total_seconds() + 10.0
            for v in chosen:
                self._wasted.append((t, partition, v.waste))
                self._freeing[partition].append((until, v.units))
                book.ended(v.attempt_id, now)
        chosen_ = tuple(ReclaimVictim(v.attempt_id, v.tenant, v.units) for v in chosen)
        return Taken(chosen_, preempting(policy, partition, chosen))


def preempting(policy: Policy, partition: str, chosen: Sequence[Victim]) -> str:
    """What a waiting job's reasons say first when borrowed work is preempted for it."""
    units = sum(v.units for v in chosen)
    tenants = ", ".join(sorted({v.tenant for v in chosen}))
    grace = policy.document.fair_share.reclaim.grace.total_seconds()
    return (
        f"reclaiming {units} borrowed unit(s) on {partition} for its quota: preempting {len(chosen)} "
        f"job(s) of {tenants} ({grace:.0f} s grace); it starts when they stop"
    )


def refused(policy: Policy, partition: str, short: tuple[float, tuple[str, ...]], left: float) -> str:
    """Why borrowed work holding the job's quota is not preempted: the work it would lose."""
    rc = policy.document.fair_share.reclaim
    loss, tenants = short
    unit = "accelerator" if onprem_partitions(policy)[partition].accelerator else "core"
    return (
        f"its quota on {partition} is lent to borrowed work of {', '.join(tenants)}, not reclaimed: "
        f"preempting it would lose {loss:,.0f} {unit}-seconds of work, over the {max(0.0, left):,.0f} "
        f"left of the reclaim budget ({rc.max_capacity_share:.0%} of the partition over "
        f"{rc.window.total_seconds() / 60:g} min, fair_share.reclaim)"
    )
