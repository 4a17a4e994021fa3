"""Scorer: expected cost = price/hour x runtime estimate, FX converted, minus a voucher's share.

Terms: `cost` (what the job would cost, weighted by `objective.price`) and `voucher`
(negative: the part a voucher covering the site pays, capped by its remaining balance; of a run
that outlasts the voucher, only the part before it expires).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.policy.schema import Tenant, Voucher
from broker.voucher_time import covered_part


def best_voucher(
    tenant: Tenant | None, site_id: str, balances: Mapping[str, float] | None, *, named_only: bool = False
) -> tuple[float, float, str] | None:
    """(discount, remaining balance, id) of the tenant's best voucher covering the site (`named_only`:
    naming it in its `sites`), or None.

    The one voucher choice: placement's `voucher` term and the money split of a burst
    (`broker.burst.money.split_cost`) both use it. `balances` None, or a voucher missing from
    it, means the balance written in the policy (nothing spent from it yet).
    """
    best: tuple[float, float, str] | None = None
    for v in tenant.vouchers if tenant is not None else ():
        if (v.sites or named_only) and site_id not in v.sites:
            continue
        balance = v.balance if balances is None else balances.get(v.id, v.balance)
        if balance > 0 and (best is None or (v.discount, balance) > best[:2]):
            best = (v.discount, balance, v.id)
    return best


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
    voucher = best_voucher(env.tenant, g.site_id, env.ctx.voucher_balances, named_only=onprem)
    if voucher is None:
        return [0.0] * len(costs)
    discount, balance, voucher_id = voucher
    if env.tenant is not None and (v := next(v for v in env.tenant.vouchers if v.id == voucher_id)).expires:
        discount *= covered(env, v)
    return [-min(c * discount, balance) for c in costs]


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
