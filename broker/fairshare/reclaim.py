"""Which borrowed on-prem work to preempt so an owner's job gets its guaranteed quota back. Pure.

Work a tenant runs on a partition beyond its quota there is *borrowed* (its most recently
started attempts are the borrowed ones). When a job waits for a partition where what is left
of its tenant's quota has room for it, borrowed work of other tenants there is preempted:
wholly borrowed attempts before one that straddles its tenant's quota (taking it would take
that tenant below its own guarantee), then tenants furthest over their share first, the
youngest attempts first (the least work lost); but only if that frees enough for the job, and
at the rate the waste budget allows (a token bucket of accelerator-seconds of lost work,
`broker.fairshare.budget`): within what the bucket holds, or, when it is full, the least
costly attempts that free enough, whatever they lose.
A job loses what it ran since it started, or, when it checkpoints, at most one checkpoint
interval of it.
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
    checkpoint_s: float | None = None
    """The job's checkpoint interval: preempted, it resumes from its last checkpoint."""


def lost(r: Running, now: datetime) -> float:
    """Unit-seconds of work preempting `r` now loses: its run so far, at most one checkpoint interval."""
    ran = max(0.0, (now - r.start).total_seconds())
    return r.units * (min(ran, r.checkpoint_s) if r.checkpoint_s else ran)


def growth(r: Running, now: datetime) -> float:
    """Unit-seconds per second that `lost(r)` grows by while `r` keeps running (0 once capped)."""
    ran = max(0.0, (now - r.start).total_seconds())
    return 0.0 if r.checkpoint_s and ran >= r.checkpoint_s else float(r.units)


@dataclass(frozen=True, slots=True)
class Victim:
    attempt_id: str
    tenant: str
    units: int
    waste: float
    """Unit-seconds of work lost (units × how long it ran)."""
    growth: float = 0.0
    """Unit-seconds per second the loss grows by while it keeps running."""


def borrowed(running: Sequence[Running], quotas: Mapping[str, int]) -> list[Running]:
    """The attempts beyond their tenant's quota on this partition (the latest started are borrowed)."""
    return [r for r, _ in _borrowed_parts(running, quotas)]


def holding_quota(running: Sequence[Running], quotas: Mapping[str, int]) -> set[str]:
    """The attempts holding any of their tenant's quota on this partition, wholly or straddling it:
    stopping one for another tenant's work takes that tenant below its own guarantee."""
    lent = {r.attempt_id for r, inside in _borrowed_parts(running, quotas) if inside == 0}
    return {r.attempt_id for r in running if r.attempt_id not in lent}


def _borrowed_parts(running: Sequence[Running], quotas: Mapping[str, int]) -> list[tuple[Running, int]]:
    """`borrowed`, each with how many of its units are still within its tenant's quota: the first
    attempt that does not fit what is left of the quota straddles it, the later ones hold none."""
    out: list[tuple[Running, int]] = []
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
                out.append((r, left))
                left = 0
    return out


def _candidates(
    owner: str, need: int, free: int, running: Sequence[Running], quotas: Mapping[str, int]
) -> list[tuple[Running, int]]:
    """Other tenants' borrowed attempts with their units within quota (`_borrowed_parts`), when the
    owner's quota here (less what it runs here) has room for `need` that is not free: a partition
    it holds no guarantee on is nothing to take back."""
    held = sum(r.units for r in running if r.tenant == owner)
    if free >= need or quotas.get(owner, 0) - held < need:
        return []
    return [(r, inside) for r, inside in _borrowed_parts(running, quotas) if r.tenant != owner]


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
    `waste_left` (what the budget's bucket holds), or when the owner's quota on this partition
    (less what it runs there) has no room for `need`: a partition it holds no guarantee on is
    nothing it can take back."""
    # Wholly borrowed work first: an attempt straddling its tenant's quota takes that tenant below
    # its own guarantee, so it goes only when the wholly borrowed work cannot free enough.
    candidates = sorted(
        _candidates(owner, need, free, running, quotas),
        key=lambda c: (c[1], -ratios.get(c[0].tenant, 0.0), -c[0].start.timestamp(), c[0].attempt_id),
    )
    chosen: list[Victim] = []
    for r, _ in candidates:
        waste = lost(r, now)
        if waste > waste_left:
            continue
        chosen.append(Victim(r.attempt_id, r.tenant, r.units, waste, growth(r, now)))
        waste_left -= waste
        free += r.units
        if free >= need:
            return _trimmed(chosen, free, need)
    return []


def _trimmed(chosen: list[Victim], free: int, need: int) -> list[Victim]:
    """`chosen` without the attempts the others make unneeded (a small one taken before a large
    one that alone frees enough): each, last chosen first, stays only if the job needs it."""
    kept = list(chosen)
    for v in reversed(chosen):
        if free - v.units >= need:
            kept.remove(v)
            free -= v.units
    return kept


def cheapest(
    *, owner: str, need: int, free: int, running: Sequence[Running], quotas: Mapping[str, int], now: datetime
) -> list[Victim]:
    """The borrowed attempts that free `need` losing the least work (smallest loss first): what a
    full bucket preempts when `victims` finds none within what it holds. Empty when none can."""
    candidates = sorted(
        _candidates(owner, need, free, running, quotas),
        key=lambda c: (c[1], lost(c[0], now), c[0].attempt_id),  # wholly borrowed first, as `victims`
    )
    chosen: list[Victim] = []
    for r, _ in candidates:
        chosen.append(Victim(r.attempt_id, r.tenant, r.units, lost(r, now), growth(r, now)))
        free += r.units
        if free >= need:
            return _trimmed(chosen, free, need)
    return []
