"""Scorer: expected cost = price/hour x runtime estimate, FX converted, minus a voucher's share.

Terms: `cost` (what the job would cost, weighted by `objective.price`) and `voucher`
(negative: the part a voucher covering the site pays, capped by its remaining balance).
"""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group


def _voucher(g: Group, env: Env) -> tuple[float, float]:
    """(discount, remaining balance) of the best voucher of the tenant covering the site."""
    tenant = env.tenant
    if tenant is None or not tenant.vouchers:
        return 0.0, 0.0
    balances = env.ctx.voucher_balances
    best = (0.0, 0.0)
    for v in tenant.vouchers:
        if v.sites and g.site_id not in v.sites:
            continue
        balance = v.balance if balances is None else balances.get(v.id, 0.0)
        if balance > 0 and (v.discount, balance) > best:
            best = (v.discount, balance)
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
    discount, balance = _voucher(g, env)
    if not discount:
        return costs, [0.0] * len(costs)
    return costs, [-min(c * discount, balance) for c in costs]
