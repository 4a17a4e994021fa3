"""Expected cost and completion time of a run on spot capacity, with or without checkpoints. Pure.

Interruptions arrive as a Poisson process at the site's rate λ (per hour, policy
`burst.sites.<id>.spot_interruption_risk`). Work is kept up to the last checkpoint (every
τ hours; without checkpoints τ is the whole run r, so a restart begins from zero). A segment
of τ hours of work then takes (e^{λτ} − 1)/λ hours of billed running on average, so a run of
k = ⌊r/τ⌋ whole segments and a last one of ρ = r − kτ hours takes

    E[billed hours] = (k × (e^{λτ} − 1) + (e^{λρ} − 1)) / λ        (→ r as λ → 0)
    E[restarts]     = λ × E[billed hours]
    E[completion]   = E[billed hours] + E[restarts] × the route's provisioning p95

A gang of N nodes (`gangs: {spot: true}`) restarts whenever any of its nodes is reclaimed: it is
interrupted at N·λ, and its billed hours are per node.

(the textbook restart model, e.g. Daly 2006 for the checkpoint form; SkyPilot's managed spot
and "Can't Be Late" (NSDI'24) reason the same way). Without checkpoints a 133.5 h job at
λ = 0.05/h is ≈ 15,900 billed hours: spot is then never the cheaper choice. On-demand offers
are the special case λ = 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker.burst.routes import RouteState
from broker.durations import format_duration
from broker.model import JobSpec, Offer, SiteId, SpotMode
from broker.policy import Policy

DEFAULT_RISK = 0.05
"""Interruptions per hour for a site the policy says nothing about."""


@dataclass(frozen=True, slots=True)
class SpotOutlook:
    """What running a job on an offer is expected to take (hours, restarts)."""

    billed_h: float
    """Expected hours of running paid for (work lost to interruptions included)."""
    restarts: float
    """Expected number of interruptions before the work completes."""
    completion_h: float
    """Expected hours from the first start to completion (restarts re-provision)."""


def interruption_rate(policy: Policy, site_id: str) -> float:
    """The site's spot interruption rate per hour (policy, else the default)."""
    limits = policy.burst.sites.get(site_id)
    return limits.spot_interruption_risk if limits is not None else DEFAULT_RISK


def provisioning_p95_h(
    policy: Policy, site_id: str, routes: Mapping[SiteId, RouteState] | None = None
) -> float:
    """Hours a route needs to bring up an instance, 95th percentile: the policy's, or the p95 its
    launches were observed to take (`routes`) when that is longer."""
    limits = policy.burst.sites.get(site_id)
    seconds = limits.provisioning_p95.total_seconds() if limits is not None else 300.0
    state = routes.get(SiteId(site_id)) if routes else None
    if state is not None and state.provisioning_p95_s is not None:
        seconds = max(seconds, state.provisioning_p95_s)
    return seconds / 3600


def checkpoint_h(spec: JobSpec) -> float | None:
    """The job's checkpoint interval in hours (None: restarts begin from zero)."""
    cp = spec.checkpoint
    return None if cp is None else cp.interval.total_seconds() / 3600


def outlook(runtime_h: float, rate_h: float, interval_h: float | None, restart_h: float) -> SpotOutlook:
    """Expected billed hours, restarts and completion for `runtime_h` of work (see module doc)."""
    if rate_h <= 0 or runtime_h <= 0:
        return SpotOutlook(runtime_h, 0.0, runtime_h)
    tau = runtime_h if interval_h is None else min(interval_h, runtime_h)
    if rate_h * tau > 600:  # e^600 overflows soon after; the run never completes in practice
        return SpotOutlook(math.inf, math.inf, math.inf)
    # Whole segments of τ, then the remainder as a shorter one: (r/τ) segments of τ would price
    # the remainder as a fraction of a full segment, and e^{λτ} grows faster than τ.
    whole = math.floor(runtime_h / tau)
    rest = max(0.0, runtime_h - whole * tau)
    billed = (whole * math.expm1(rate_h * tau) + math.expm1(rate_h * rest)) / rate_h
    restarts = rate_h * billed
    return SpotOutlook(billed, restarts, billed + restarts * restart_h)


def offer_outlook(spec: JobSpec, offer: Offer, policy: Policy, runtime_h: float | None = None) -> SpotOutlook:
    """The outlook of `spec` on `offer` (on-demand: exactly its runtime)."""
    r = spec.runtime_estimate.total_seconds() / 3600 if runtime_h is None else runtime_h
    if not offer.spot:
        return SpotOutlook(r, 0.0, r)
    rate = interruption_rate(policy, offer.site) * spec.resources.nodes  # a gang restarts if any node goes
    return outlook(r, rate, checkpoint_h(spec), provisioning_p95_h(policy, offer.site))


def spot_refusal(
    spec: JobSpec, offer: Offer, policy: Policy, *, slack_h: float | None, ratio: float = 1.0
) -> str | None:
    """Why spot is not acceptable for this job on this offer (None: acceptable).

    Refused when the expected restarts exceed `burst.spot_max_expected_restarts`, or when the
    expected completion would run past the job's slack (deadline or max_wait), if it has one.
    `ratio`: the stretch the projected wait model puts on the tenant's estimates (its median
    actual/estimated runtime times its spread, `broker.burst.runtimes`: a high quantile); above
    1 it stretches the estimate, except for a job that requires spot, which submission admitted
    on its estimate (stretched, it could wait for ever for an offer it may not take).
    """
    if not offer.spot:
        return None
    stretch = 1.0 if spec.spot == SpotMode.REQUIRED else max(1.0, ratio)
    out = offer_outlook(spec, offer, policy, spec.runtime_estimate.total_seconds() / 3600 * stretch)
    limit = policy.burst.spot_max_expected_restarts
    if out.restarts > limit:
        every = "none" if spec.checkpoint is None else format_duration(spec.checkpoint.interval)
        expects = f"{restarts_text(out.restarts)} restarts (limit {limit:g}; checkpoint: {every})"
        if stretch > 1.0:  # (the estimate alone may be within it: say why it is not)
            expects += f" for the estimate x {stretch:.2f}, the tenant's runtime stretch"
        return f"{offer.key}: spot expects {expects}"
    if slack_h is not None and out.completion_h > slack_h:
        return (
            f"{offer.key}: spot expects completion in {restarts_text(out.completion_h)} h, "
            f"after the deadline ({slack_h:.1f} h left)"
        )
    return None


def restarts_text(x: float | None) -> str:
    """An expected restart count for a person: `2.4`, `1,250.0`, or `4.3e+15` past a million
    (`4311231547115194.0` read as a typo), `inf` when it overflows or is unknown."""
    if x is None or math.isinf(x):
        return "inf"
    return f"{x:.2g}" if x >= 1e6 else f"{x:,.1f}"


ADMISSION_FIELDS = {
    "resources", "spot", "data_residency", "max_price_per_hour", "runtime_estimate", "checkpoint"
}
"""The job fields whether it can ever be placed depends on, with those the policy's CEL rules read
and whether it has an image."""


def spot_never(spec: JobSpec, allowed: Sequence[Offer], policy: Policy) -> list[str]:
    """The restart-limit refusals when every allowed offer is spot and each expects more restarts
    than the policy allows: a property of the job and the policy, so the job can never run."""
    if not allowed or not all(o.spot for o in allowed):
        return []
    refusals = [(offer_outlook(spec, o, policy).restarts, spot_refusal(spec, o, policy, slack_h=None))
                for o in allowed]
    if any(r is None for _, r in refusals):
        return []
    # The nearest miss first: a refusal names it (the likeliest to run), not the worst offer.
    return [f"spot: {r}" for _, r in sorted(refusals, key=lambda pair: pair[0]) if r][:10]

