"""What a cloud attempt would cost a tenant: cash vs voucher, and what is left to spend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from broker.model import JobSpec, Offer
from broker.policy import Policy

BEIJING = timezone(timedelta(hours=8))


def month_of(when: datetime) -> str:
    """Budgets run per calendar month in Beijing time."""
    return when.astimezone(BEIJING).strftime("%Y-%m")


@dataclass(frozen=True)
class TenantMoney:
    """A tenant's money this month as the store sees it right now (cash, policy currency)."""

    budget_left: float | None = None
    """Cash left before the tenant's monthly budget; None when it has none."""
    global_left: float | None = None
    """Cash left before the global burst cap; None when there is none."""
    voucher_balances: Mapping[str, float] = field(default_factory=dict)
    """Remaining balance per voucher id."""


@dataclass(frozen=True)
class CostSplit:
    total: float
    cash: float
    voucher: float
    voucher_id: str | None


def estimate_cost(spec: JobSpec, offer: Offer, policy: Policy, hours: float | None = None) -> float:
    """Price × runtime × nodes in the policy currency (0 when the currency has no FX rate)."""
    runtime_h = spec.runtime_estimate.total_seconds() / 3600 if hours is None else hours
    rate = policy.rate(offer.currency or policy.currency) or 0.0
    return offer.price_per_hour * rate * runtime_h * spec.resources.nodes


def split_cost(
    tenant_id: str, site_id: str, total: float, policy: Policy, balances: Mapping[str, float]
) -> CostSplit:
    """Vouchers pay first, at their discount, for the sites they cover; the rest is cash."""
    tenant = policy.tenant(tenant_id)
    best: tuple[float, float, str] | None = None
    for v in tenant.vouchers if tenant is not None else ():
        if v.sites and site_id not in v.sites:
            continue
        balance = balances.get(v.id, v.balance)
        if balance > 0 and (best is None or (v.discount, balance) > best[:2]):
            best = (v.discount, balance, v.id)
    if best is None:
        return CostSplit(total, total, 0.0, None)
    voucher = min(total * best[0], best[1])
    return CostSplit(total, total - voucher, voucher, best[2])
