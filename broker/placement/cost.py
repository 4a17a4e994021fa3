"""Scorer: expected cost = price/hour x runtime estimate, FX converted, minus a voucher's share.

Terms: `cost` (what the job would cost, weighted by `objective.price`) and `voucher`
(negative: the part a voucher covering the site pays, capped by its remaining balance; of a run
that outlasts the voucher, only the part before it expires).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.policy.schema import Tenant, Voucher
from broker.voucher_time import covered_part

Draws = tuple[tuple[str, float], ...]
"""(voucher id, amount it pays) of each voucher a burst draws on, in the order they pay."""


def voucher_order(voucher: Voucher) -> tuple[date, float, str]:
    """The order a tenant's vouchers pay in: the one that expires first (its balance is lost on
    the next day, while a lasting one keeps), then the higher discount; never-expiring ones last."""
    return (voucher.expires or date.max, -voucher.discount, voucher.id)


def usable_vouchers(
    tenant: Tenant | None, site_id: str, balances: Mapping[str, float] | None, *, named_only: bool = False
) -> list[tuple[Voucher, float]]:
    """(voucher, remaining balance) of the tenant's vouchers covering the site (`named_only`: naming
    it in its `sites`) with something left, in `voucher_order`. `balances` None, or a voucher
    missing from it, means the balance written in the policy (nothing spent from it yet)."""
    out = []
    for v in sorted(tenant.vouchers if tenant is not None else (), key=voucher_order):
        if (v.sites or named_only) and site_id not in v.sites:
            continue
        balance = v.balance if balances is None else balances.get(v.id, v.balance)
        if balance > 0:
            out.append((v, balance))
    return out


def draw_vouchers(
    usable: Sequence[tuple[Voucher, float]], total: float, run: tuple[datetime, datetime] | None = None
) -> Draws:
    """What each voucher pays of a run costing `total`, the one money split of a burst (placement's
    `voucher` term, the decision, the reservation, settling and the simulator all use it).

    In the order given (`voucher_order`), each voucher pays its discount of the run's cost from
    where the one before stopped paying (its balance spent, or its expiry) up to its own expiry
    (for a `run`; a run costs the same each hour), within its balance; the rest is cash."""
    draws: list[tuple[str, float]] = []
    done = 0.0  # the part of the run (from its start) a voucher has paid for
    for voucher, balance in usable:
        if done >= 1.0 or total <= 0:
            break
        upto = 1.0 if run is None else covered_part(voucher, *run)
        can = total * (upto - done) * voucher.discount
        if can <= 0 or balance <= 0:
            continue
        paid = min(can, balance)
        draws.append((voucher.id, paid))
        done += (upto - done) * paid / can
    return tuple(draws)


def score_cost(g: Group, offers: list[Offer], env: Env) -> tuple[list[float], list[float]]:
    """The `cost` and `voucher` terms of each offer (policy currency)."""
    policy = env.policy
    factor = env.machine_h * policy.objective.price
    cur = policy.currency
    rates: dict[str, float] = {}  # a group's offers nearly always share one currency
    costs = []
    for o in offers:
        c = o.currency or cur
        rate = rates.get(c)
        if rate is None:
            rate = rates[c] = policy.rate(c) or 0.0
        costs.append(o.price_per_hour * rate * factor)
    return costs, voucher_terms(g, env, costs)


def voucher_terms(g: Group, env: Env, costs: list[float]) -> list[float]:
    """The `voucher` term of each offer of the group, given their `cost` terms: the voucher pays
    its discount of the part of the run before it expires, as the burst's money split does."""
    # A voucher without `sites` covers every cloud site, not on-prem work (the ledger draws vouchers
    # for cloud bursts only): on-prem, only a voucher naming the site counts.
    onprem = g.site is not None and bool(g.site.partitions)
    usable = usable_vouchers(env.tenant, g.site_id, env.ctx.voucher_balances, named_only=onprem)
    if not usable:
        return [0.0] * len(costs)
    if len(usable) == 1:  # (the common case, without a split per offer)
        (v, balance), = usable
        discount = v.discount * covered(env, v) if v.expires else v.discount
        return [-min(c * discount, balance) for c in costs]
    run = (env.ctx.now, env.ctx.now + env.spec.runtime_estimate)
    return [-sum(paid for _, paid in draw_vouchers(usable, c, run)) for c in costs]


def covered(env: Env, voucher: Voucher) -> float:
    """The part of the job's run, started at the decision's `now`, before the voucher expires."""
    return covered_part(voucher, env.ctx.now, env.ctx.now + env.spec.runtime_estimate)


def voucher_columns(
    groups: Sequence[Group], sizes: Sequence[int], costs: list[float], env: Env
) -> list[float]:
    """`voucher_terms` over many offers at once: `groups[i]` holds the next `sizes[i]` of them."""
    tenant = env.tenant
    if tenant is None or not tenant.vouchers:  # no voucher can cover any site
        return [0.0] * len(costs)
    out: list[float] = []
    for g, n in zip(groups, sizes, strict=True):
        out += voucher_terms(g, env, costs[len(out) : len(out) + n])
    return out
