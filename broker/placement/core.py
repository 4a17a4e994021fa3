"""`place()`: the one pure decision path (dispatch, bursting, the simulator and explain call it).

filter groups (site x hardware) -> filter each kept group's offers -> score -> rank.
Cheap Python filters run first; CEL rules run last and are memoized per group.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.model import JobSpec, Offer, TenantId
from broker.placement._env import Env, Group, group_offers
from broker.placement._filter import GroupFilter, OfferFilter
from broker.placement.blocklist import filter_blocked_offers, filter_blocked_sites
from broker.placement.carbon import score_carbon
from broker.placement.cost import score_cost
from broker.placement.export import filter_export
from broker.placement.hardware import filter_hardware_model, filter_hardware_size
from broker.placement.health import filter_health
from broker.placement.preference import score_preference
from broker.placement.price_cap import filter_price_cap
from broker.placement.rank import best, rank
from broker.placement.residency import filter_residency
from broker.placement.rules import filter_offer_rules, filter_rules
from broker.placement.spot import filter_spot
from broker.placement.tenant import filter_tenant_sites
from broker.placement.types import Explanation, PlacementContext, Reason, ScoredOffer
from broker.placement.wait import score_wait
from broker.policy import Policy

GROUP_FILTERS: tuple[GroupFilter, ...] = (
    filter_health,
    filter_blocked_sites,
    filter_tenant_sites,
    filter_hardware_model,
    filter_residency,
    filter_export,
    filter_rules,
)
OFFER_FILTERS: tuple[OfferFilter, ...] = (
    filter_hardware_size,
    filter_spot,
    filter_price_cap,
    filter_blocked_offers,
    filter_offer_rules,
)
_INF = float("inf")
_NO_TERMS: dict[str, float] = {}
_new = tuple.__new__


def _score(g: Group, offers: list[Offer], env: Env) -> list[ScoredOffer]:
    costs, vouchers = score_cost(g, offers, env)
    waits = score_wait(g, offers, env)
    carbons = score_carbon(g, offers, env)
    prefs = score_preference(g, offers, env)
    return [
        _new(
            ScoredOffer,
            (
                o,
                True,
                (),
                c + v + w + k + p,
                {"cost": c, "voucher": v, "wait": w, "carbon": k, "preference": p},
            ),
        )
        for o, c, v, w, k, p in zip(offers, costs, vouchers, waits, carbons, prefs, strict=True)
    ]


def place(
    spec: JobSpec, tenant: TenantId, offers: Sequence[Offer], policy: Policy, ctx: PlacementContext
) -> Explanation:
    """Rank `offers` for `spec` of `tenant` under `policy`; pure and deterministic.

    Every offer appears in the result: allowed ones best-first (the failover order), then
    rejected ones in input order, each with the rule ids and sentences that rejected it.
    """
    env = Env(spec, tenant, policy, ctx)
    groups = group_offers(offers, policy)
    rejected: list[tuple[Offer, tuple[Reason, ...]]] = []
    for gf in GROUP_FILTERS:
        groups, group_rej = gf(groups, env)
        for g, reasons in group_rej:
            rejected.extend((o, reasons) for o in g.offers)
    allowed: list[ScoredOffer] = []
    for g in groups:
        kept = g.offers
        for of in OFFER_FILTERS:
            kept, offer_rej = of(g, kept, env)
            if offer_rej:
                rejected.extend(offer_rej)
            if not kept:
                break
        if kept:
            allowed.extend(_score(g, kept, env))
    chain = policy.objective.rank
    snapshot = tuple(offers) if rejected else ()

    def ranking() -> tuple[ScoredOffer, ...]:
        position = {id(o): i for i, o in enumerate(snapshot)}
        rej = sorted(rejected, key=lambda pair: position[id(pair[0])])
        return (*rank(allowed, chain), *(ScoredOffer(o, False, r, _INF, _NO_TERMS) for o, r in rej))

    return Explanation(
        best(allowed, chain),
        None,
        policy.hash,
        currency=policy.currency,
        sites=policy.site_facts,
        decided_at=ctx.now,
        ranking=ranking,
    )


def rejection_summary(explanation: Explanation) -> list[Reason]:
    """Distinct reasons across rejected offers (for FAILED_PRECONDITION details), first-seen order."""
    seen: dict[Reason, None] = {}
    for s in explanation.offers:
        if not s.allowed:
            for r in s.reasons:
                seen.setdefault(r, None)
    return list(seen)
