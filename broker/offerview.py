"""`szb offers`: every offer, and whether a tenant may use it and why not. Pure.

Like SkyPilot's `show-gpus`, with compliance: each offer is judged by the same placement
core for a probe job that asks for exactly that hardware (its accelerator and count, or its
CPUs), so hardware fit never hides the rule that matters (export control, residency,
tenant sites, health, blocks). A cloud offer is then judged by the tenant's money as a burst
decision judges it (`money_refusal`, an hour of the offer against the budget and the global
burst cap left): a budget that refuses every burst said "yes" here while the job waited on it.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from broker.burst.cloud import money_refusal
from broker.burst.inputs import is_onprem
from broker.burst.money import TenantMoney
from broker.catalog.accelerators import normalize
from broker.model import AcceleratorRequest, JobSpec, Offer, Resources, TenantId
from broker.placement import PlacementContext, Reason, place
from broker.policy import Policy


@dataclass(frozen=True)
class OfferVerdict:
    offer: Offer
    allowed: bool
    reasons: tuple[Reason, ...]
    price_in_policy_currency: float


def _probe(offer: Offer) -> JobSpec:
    """The smallest job that wants exactly this offer's hardware."""
    if offer.accelerator:
        accelerators = AcceleratorRequest(count=max(1, offer.count), any_of=(offer.accelerator,))
        resources = Resources(accelerators=accelerators)
    else:
        resources = Resources(cpus=max(1.0, offer.cpus or 1.0))
    return JobSpec(
        name="offers-probe", command=("true",), runtime_estimate=timedelta(hours=1), resources=resources
    )


def offer_verdicts(
    offers: Sequence[Offer],
    tenant: TenantId,
    policy: Policy,
    ctx: PlacementContext,
    *,
    accelerators: Collection[str] = (),
    allowed_only: bool = False,
    money: TenantMoney | None = None,
) -> list[OfferVerdict]:
    """One verdict per offer (filtered by accelerator names), cheapest first within each model;
    with the tenant's `money`, an allowed cloud offer it cannot pay for is refused with why."""
    wanted = {normalize(a) for a in accelerators}
    groups: dict[tuple[str, int, float], list[Offer]] = {}
    for o in offers:
        if wanted and normalize(o.accelerator or "cpu") not in wanted:
            continue
        groups.setdefault((o.accelerator or "", o.count, o.cpus), []).append(o)
    out: list[OfferVerdict] = []
    for group in groups.values():
        probe = _probe(group[0])
        expl = place(probe, tenant, group, policy, ctx)
        for scored in expl.offers:
            allowed, reasons, offer = scored.allowed, scored.reasons, scored.offer
            if allowed and money is not None and not is_onprem(policy, offer.site):
                refused = money_refusal(probe, offer, tenant, policy, money, ctx.now)
                if isinstance(refused, str):  # "budget: ..." / "global burst cap: ..."
                    rule, _, why = refused.partition(": ")
                    allowed, reasons = False, (Reason(rule.replace(" ", "_"), why),)
            if allowed_only and not allowed:
                continue
            rate = policy.rate(offer.currency or policy.currency) or 0.0
            out.append(OfferVerdict(offer, allowed, reasons, offer.price_per_hour * rate))
    out.sort(
        key=lambda v: (
            v.offer.accelerator or "~",
            v.offer.count,
            not v.allowed,
            v.price_in_policy_currency,
            v.offer.site,
            v.offer.key,
        )
    )
    return out


def unread_offers(
    policy: Policy, offers: Iterable[Offer], unhealthy: Container[str], totals: Mapping[str, int]
) -> frozenset[str]:
    """Keys of the on-prem offers whose free capacity and wait nobody knows: a sick site without a
    live reading (slurmrestd down) still has its policy's size, which its static offers carry as
    free. `szb offers`, `szb status` and `szb explain` show them as unknown ('?')."""
    return frozenset(
        o.key for o in offers
        if o.site in unhealthy and is_onprem(policy, o.site) and o.partition not in totals
    )
