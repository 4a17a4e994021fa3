"""Which borrowed on-prem work to preempt so an owner's job gets its guaranteed quota back. Pure.

Work a tenant runs on a partition beyond its quota there is *borrowed* (its most recently
started attempts are the borrowed ones). When a job waits for a partition where what is left
of its tenant's quota has room for it, borrowed work of other tenants there is preempted —
tenants furthest over their share first, the youngest attempts first (the least work lost) —
but only if that frees enough for the job, and only within the waste budget: the
accelerator-seconds preempted work had done in a window may not exceed `max_capacity_share`
of the partition's capacity over that window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Running:
    """One live attempt on the partition."""

    attempt_id: str
    tenant: str
    units: int
    start: datetime


@dataclass(frozen=True, slots=True)
class Victim:
    attempt_id: str
    tenant: str
    units: int
    waste: float
    """Unit-seconds of work lost (units × how long it ran)."""


def borrowed(running: Sequence[Running], quotas: Mapping[str, int]) -> list[Running]:
    """The attempts beyond their tenant's quota on this partition (the latest started are borrowed)."""
    out: list[Running] = []
    by_tenant: dict[str, list[Running]] = {}
    for r in running:
        by_tenant.setdefault(r.tenant, []).append(r)
    for tenant, mine in by_tenant.items():
        mine.sort(key=lambda r: (r.start, r.attempt_id))
        left = quotas.get(tenant, 0)
        for r in mine:
            if left >= r.units:
                left -= r.units
            else:
                left = 0
                out.append(r)
    return out


def victims(
    *,
    owner: str,
    need: int,
    free: int,
    running: Sequence[Running],
    quotas: Mapping[str, int],
    ratios: Mapping[str, float],
    waste_left: float,
    now: datetime,
) -> list[Victim]:
    """Borrowed attempts to preempt so `need` units are free; empty when that cannot be done within
    budget, or when the owner's quota on this partition (less what it runs there) has no room for
    `need`: a partition it holds no guarantee on is nothing it can take back."""
    held = sum(r.units for r in running if r.tenant == owner)
    if free >= need or quotas.get(owner, 0) - held < need:
        return []
    candidates = [r for r in borrowed(running, quotas) if r.tenant != owner]
    candidates.sort(key=lambda r: (-ratios.get(r.tenant, 0.0), -r.start.timestamp(), r.attempt_id))
    chosen: list[Victim] = []
    for r in candidates:
        waste = r.units * max(0.0, (now - r.start).total_seconds())
        if waste > waste_left:
            continue
        chosen.append(Victim(r.attempt_id, r.tenant, r.units, waste))
        waste_left -= waste
        free += r.units
        if free >= need:
            return chosen
    return []
