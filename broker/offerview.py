"""`szb offers`: every offer, and whether a tenant may use it and why not. Pure.

Like SkyPilot's `show-gpus`, with compliance: each offer is judged by the same placement
core for a probe job that asks for exactly that hardware (its accelerator and count, or its
CPUs), so hardware fit never hides the rule that matters (export control, residency,
tenant sites, health, blocks).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

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
) -> list[OfferVerdict]:
    """One verdict per offer (filtered by accelerator names), cheapest first within each model."""
    wanted = {normalize(a) for a in accelerators}
    groups: dict[tuple[str, int, float], list[Offer]] = {}
    for o in offers:
        if wanted and normalize(o.accelerator or "cpu") not in wanted:
            continue
        groups.setdefault((o.accelerator or "", o.count, o.cpus), []).append(o)
    out: list[OfferVerdict] = []
    for group in groups.values():
        expl = place(_probe(group[0]), tenant, group, policy, ctx)
        for scored in expl.offers:
            if allowed_only and not scored.allowed:
                continue
            rate = policy.rate(scored.offer.currency or policy.currency) or 0.0
            out.append(
                OfferVerdict(scored.offer, scored.allowed, scored.reasons, scored.offer.price_per_hour * rate)
            )
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
