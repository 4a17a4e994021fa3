"""What a cloud attempt would cost a tenant: cash vs voucher, and what is left to spend."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from broker.model import JobSpec, Offer
from broker.placement.cost import best_voucher
from broker.policy import Policy
from broker.policy.schema import Voucher
from broker.voucher_time import BEIJING as BEIJING  # (budgets' months are Beijing's too)
from broker.voucher_time import covered_part, expires_at


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


def estimate_cost(
    spec: JobSpec, offer: Offer, policy: Policy, hours: float | None = None, rate: float | None = None
) -> float:
    """Price × runtime × nodes in the policy currency, at `rate` or else the policy's exchange
    rate for the offer's currency (0 when it has none)."""
    runtime_h = spec.runtime_estimate.total_seconds() / 3600 if hours is None else hours
    if rate is None:
        rate = fx_rate(policy, offer) or 0.0
    return offer.price_per_hour * rate * runtime_h * spec.resources.nodes


def fx_rate(policy: Policy, offer: Offer) -> float | None:
    """Policy-currency units per unit of the offer's currency (None: the policy has no rate)."""
    return policy.rate(offer.currency or policy.currency)


def cents_up(amount: float) -> float:
    """Money rounded up to the cent: a positive estimate, however small, reserves one or more."""
    return math.ceil(round(amount * 100, 6)) / 100  # round first: 0.07 * 100 is 7.000000000000001


def split_cost(
    tenant_id: str, site_id: str, total: float, policy: Policy, balances: Mapping[str, float],
    run: tuple[datetime, datetime] | None = None,
) -> CostSplit:
    """Vouchers pay first, at their discount, for the sites they cover; the rest is cash. Given
    the `run` (its start and estimated end), a voucher pays only for the part before it expires."""
    tenant = policy.tenant(tenant_id)
    best = best_voucher(tenant, site_id, balances)
    if best is None:
        return CostSplit(total, total, 0.0, None)
    drawn = next((v for v in tenant.vouchers if v.id == best[2]), None) if tenant is not None else None
    part = 1.0 if run is None or drawn is None else covered_part(drawn, *run)
    voucher = min(total * best[0] * part, best[1])
    return CostSplit(total, total - voucher, voucher, best[2])


@dataclass(frozen=True)
class Charge:
    """One attempt's money in a month: cash (spent once settled, else reserved) and voucher use."""

    tenant: str
    cash: float
    voucher: float = 0.0
    voucher_id: str | None = None


def monthly_budget(policy: Policy, tenant_id: str) -> float | None:
    """The tenant's monthly burst budget (its own, else the policy default; None = no limit)."""
    tenant = policy.tenant(tenant_id)
    if tenant is not None and tenant.monthly_budget is not None:
        return tenant.monthly_budget
    return policy.burst.budget.default_tenant_monthly


def budget_alert(policy: Policy, tenant_id: str, money: TenantMoney) -> bool:
    """The tenant's spend and reservations this month have reached `burst.budget.alert_fraction`
    of its (non-zero) monthly budget."""
    budget = monthly_budget(policy, tenant_id)
    if not budget or money.budget_left is None:
        return False
    return budget - money.budget_left >= policy.burst.budget.alert_fraction * budget - 1e-9


def tenant_money(
    policy: Policy,
    tenant_id: str,
    charges: Iterable[Charge],
    voucher_used: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> TenantMoney:
    """What a tenant has left this month, from every charge of the month (all tenants').

    The one money ledger: the live broker feeds it the store's spend entries, the simulator
    its own book, so both decide on the same arithmetic. A voucher's balance is spent once,
    not once a month: `voucher_used` (per voucher, every month) replaces the month's draws.
    A voucher past its `expires` day at `now` (Beijing time) has nothing left.
    """
    used = everyone = 0.0
    month_draws: dict[str, float] = {}
    for c in charges:
        everyone += c.cash
        if c.tenant != tenant_id:
            continue
        used += c.cash
        if c.voucher_id is not None:
            month_draws[c.voucher_id] = month_draws.get(c.voucher_id, 0.0) + c.voucher
    spent_from = month_draws if voucher_used is None else voucher_used
    budget = monthly_budget(policy, tenant_id)
    cap = policy.burst.budget.global_monthly_cap
    tenant = policy.tenant(tenant_id)
    return TenantMoney(
        budget_left=None if budget is None else budget - used,
        global_left=None if cap is None else cap - everyone,
        voucher_balances={
            v.id: 0.0 if expired(v, now) else max(0.0, v.balance - spent_from.get(v.id, 0.0))
            for v in (tenant.vouchers if tenant is not None else ())
        },
    )


def expired(voucher: Voucher, now: datetime | None) -> bool:
    """Past the voucher's last day in Beijing time (never, without an `expires` or a `now`)."""
    ends = expires_at(voucher)
    return ends is not None and now is not None and now >= ends


def settled_split(
    policy: Policy,
    tenant_id: str,
    total: float,
    voucher_id: str | None,
    others_used: float,
    run: tuple[datetime, datetime],
) -> tuple[float, float]:
    """(cash, voucher) of what an attempt cost over `run` (its start and end): the voucher it drew
    on pays its discount of the part before it expires, up to what the tenant's other attempts
    left of its balance; the rest is cash."""
    voucher = voucher_of(policy, tenant_id, voucher_id)
    if voucher is None:
        return total, 0.0
    covered = total * covered_part(voucher, *run)
    paid = max(0.0, min(covered * voucher.discount, voucher.balance - others_used))
    return total - paid, paid


def voucher_of(policy: Policy, tenant_id: str, voucher_id: str | None) -> Voucher | None:
    """The tenant's voucher of that id in the policy (None: no such voucher)."""
    tenant = policy.tenant(tenant_id)
    return next((v for v in (tenant.vouchers if tenant else ()) if v.id == voucher_id), None)


def voucher_for(policy: Policy, tenant_id: str, site_id: str, money: TenantMoney) -> str | None:
    """The voucher a burst to `site_id` draws on: the one `split_cost` chose with these balances."""
    best = best_voucher(policy.tenant(tenant_id), site_id, money.voucher_balances)
    return None if best is None else best[2]
