"""What a cloud attempt would cost a tenant: cash vs voucher, and what is left to spend."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from broker.model import JobSpec, Offer
from broker.placement.cost import Draws, draw_vouchers, usable_vouchers
from broker.policy import Policy
from broker.policy.schema import Voucher
from broker.voucher_time import BEIJING as BEIJING  # (budgets' months are Beijing's too)
from broker.voucher_time import expires_at, month_span, months_of


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
    ahead: Mapping[str, tuple[float | None, float | None]] | None = None
    """(budget left, global cap left) of each later budget month that runs already reserved reach
    into (a month not named: all of it left): a burst's cash counts in each month for the part of
    its run there, as the store checks its reservation. None: the ledger files a burst wholly in
    the month it starts (the simulator's), so its cash is checked in full against this month."""


@dataclass(frozen=True)
class CostSplit:
    total: float
    cash: float
    voucher: float
    voucher_id: str | None
    """The voucher that pays first (None: none pays)."""
    draws: Draws = ()
    """What each voucher pays, in the order they pay (`draw_vouchers`)."""


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
    """Vouchers pay first, for the sites they cover, one after another as each runs out
    (`draw_vouchers`: the one expiring first, then the higher discount); the rest is cash. Given
    the `run` (its start and estimated end), a voucher pays only for the part before it expires."""
    draws = draw_vouchers(usable_vouchers(policy.tenant(tenant_id), site_id, balances), total, run)
    voucher = sum(paid for _, paid in draws)
    return CostSplit(total, total - voucher, voucher, draws[0][0] if draws else None, draws)


@dataclass(frozen=True)
class Charge:
    """One attempt's money in a month: cash (spent once settled, else reserved) and voucher use."""

    tenant: str
    cash: float
    voucher: float = 0.0
    voucher_id: str | None = None


def cash_by_month(cash: float, run: tuple[datetime, datetime]) -> list[tuple[str, float]]:
    """(budget month, cash) of each month a run from `run[0]` to `run[1]` touches: the part of
    `cash` run there (a run costs the same each hour), as `SpendEntry.in_month` counts it."""
    start, end = run
    if end <= start:
        return [(month_of(start), cash)]
    out = []
    for month in months_of(start, end):
        since, until = month_span(month)
        out.append((month, cash * max(0.0, (min(end, until) - max(start, since)) / (end - start))))
    return out


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
    site_id: str,
    total: float,
    others_used: Mapping[str, float],
    run: tuple[datetime, datetime],
) -> tuple[float, Draws]:
    """(cash, draws) of what an attempt at `site_id` cost over `run` (its start and end), split as
    `split_cost` splits a burst, each voucher within what the tenant's other attempts left of its
    balance (`others_used`, open reservations included, so theirs stay payable)."""
    tenant = policy.tenant(tenant_id)
    vouchers = tenant.vouchers if tenant is not None else ()
    balances = {v.id: max(0.0, v.balance - others_used.get(v.id, 0.0)) for v in vouchers}
    got = split_cost(tenant_id, site_id, total, policy, balances, run)
    return got.cash, got.draws


def voucher_of(policy: Policy, tenant_id: str, voucher_id: str | None) -> Voucher | None:
    """The tenant's voucher of that id in the policy (None: no such voucher)."""
    tenant = policy.tenant(tenant_id)
    return next((v for v in (tenant.vouchers if tenant else ()) if v.id == voucher_id), None)


def voucher_for(
    policy: Policy, tenant_id: str, site_id: str, money: TenantMoney, split: tuple[float, float],
    run: tuple[datetime, datetime] | None = None,
) -> Draws:
    """The draws of a burst to `site_id` decided at `split` (cash, voucher): those `split_cost`
    makes of its cost with these balances, paying the decided voucher share in all."""
    cash, voucher = split
    got = split_cost(tenant_id, site_id, cash + voucher, policy, money.voucher_balances, run)
    return drawn_up_to(got.draws, voucher)


def drawn_up_to(draws: Draws, voucher: float) -> Draws:
    """The first of `draws` (in paying order) up to `voucher` in all: the split a decision took."""
    out: list[tuple[str, float]] = []
    for vid, paid in draws:
        take = min(paid, voucher - sum(p for _, p in out))
        if take <= 0:
            break
        out.append((vid, take))
    return tuple(out)
