"""Where each tenant stands in fair share, for operators (`szb status`): its weight, its
decayed use of on-prem capacity, that use over its entitled share, and its guaranteed quota
per partition with the units its running work holds there (beyond the quota: borrowed). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from broker.fairshare.book import FairShareBook, capacity_of
from broker.fairshare.order import dominant, share_ratios
from broker.policy import Policy


@dataclass(frozen=True, slots=True)
class QuotaUse:
    partition: str
    """`site/partition`."""
    guaranteed: int
    in_use: int

    @property
    def borrowed(self) -> int:
        """Units held beyond the guarantee (reclaimable when another tenant needs its quota)."""
        return max(0, self.in_use - self.guaranteed)


@dataclass(frozen=True, slots=True)
class TenantStanding:
    tenant: str
    weight: float
    usage_share: float
    """Its decayed usage as a fraction of on-prem capacity (the dominant resource)."""
    ratio: float | None
    """`usage_share` over its entitled share among the active tenants (1.0 = exactly fair): those
    using on-prem capacity now or in the last fair-share order; None when it is not active."""
    quotas: tuple[QuotaUse, ...]


def tenant_standings(
    book: FairShareBook, policy: Policy, now: datetime, ratios: Mapping[str, float]
) -> list[TenantStanding]:
    """Every tenant the policy declares or the book knows, by name (`ratios`: the last order's,
    whose tenants count as active)."""
    capacity = capacity_of(policy)
    states = book.tenant_states(policy, now)
    active = {t for t, st in states.items() if dominant(st.usage, capacity) > 0} | set(ratios)
    fresh = share_ratios(states, active, capacity)
    out = []
    for tenant, st in sorted(states.items()):
        parts = sorted({*st.share.quota, *st.in_use})
        quotas = tuple(QuotaUse(p, st.share.quota.get(p, 0), st.in_use.get(p, 0)) for p in parts)
        used = dominant(st.usage, capacity)
        out.append(TenantStanding(tenant, st.share.weight, used, fresh.get(tenant), quotas))
    return out
