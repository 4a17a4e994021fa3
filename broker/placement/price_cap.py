"""Filter: the job's price cap (`max_price_per_hour`, in the policy currency), FX converted."""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement._filter import Kept, OfferKeep, OfferRejections, per_group
from broker.placement.parts import Part
from broker.placement.types import Reason

CAP = "job.max_price"
FX = "policy.fx"


def filter_price_cap(g: Group, offers: list[Offer], env: Env) -> tuple[list[Offer], OfferRejections]:
    """Reject offers above the cap, and offers in a currency the policy has no rate for."""
    policy = env.policy
    cap = env.price_cap
    kept: list[Offer] = []
    rejected: OfferRejections = []
    cur = policy.currency
    if cap is None and all(policy.rate(c or cur) is not None for c in {o.currency for o in offers}):
        return offers, []  # no cap and every rate known: nothing to reject
    for o in offers:
        rate = policy.rate(o.currency or cur)
        if rate is None:
            rejected.append((o, (Reason(FX, f"no exchange rate from {o.currency} to {cur} in the policy"),)))
            continue
        # The cap is the job's hourly price: a gang of N nodes pays N offers' prices.
        price = o.price_per_hour * rate * env.nodes
        if cap is not None and price > cap:
            each = f" ({env.nodes} nodes at {o.price_per_hour * rate:.2f})" if env.nodes > 1 else ""
            why = f"{price:.2f} {cur}/h{each} is above the job's cap of {cap:g} {cur}/h"
            rejected.append((o, (Reason(CAP, why),)))
            continue
        kept.append(o)
    return kept, rejected


def keep_price_cap(env: Env) -> OfferKeep:
    """`filter_price_cap`'s kept offers, without reasons."""
    if env.price_cap is not None:
        return per_group(filter_price_cap, env)
    rate, cur = env.policy.rate, env.policy.currency

    def known(pairs: Kept) -> Kept:
        """No cap: only an offer in a currency without a rate is rejected (checked once per currency)."""
        currencies = {o.currency for _, offers in pairs if type(offers) is not Part for o in offers}.union(
            *(offers.currencies for _, offers in pairs if type(offers) is Part)
        )
        if all(rate(c or cur) is not None for c in currencies):
            return pairs
        return [
            (g, kept)
            for g, offers in pairs
            if (kept := [o for o in offers if rate(o.currency or cur) is not None])
        ]

    return known
