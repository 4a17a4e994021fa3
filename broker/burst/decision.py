"""The burst decision: run on-prem now, wait on-prem, or burst to a cloud offer. Pure.

Rules, in order:
1. Placement (`broker.placement.place`) ranks every offer; only allowed offers count.
2. On-prem capacity free now → run there (the best-scoring free on-prem offer).
3. On-prem would make the job wait W. With W within what is left of its `max_wait`, the job
   waits on-prem (a site that queues jobs itself, like Slurm, is sent the job now).
4. Beyond it, the job bursts to the best allowed cloud offer whose total cost (price ×
   runtime + its own wait cost + spot risk) beats waiting (on-prem cost + W's wait cost +
   the lateness cost past max_wait) — within the tenant's budget, the global cap and the
   per-route limits. The burst condition must hold for `burst.hysteresis` before acting,
   unless the job's remaining allowed wait is shorter than that.
5. A job no on-prem offer can run at all goes straight to the best cloud offer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from broker.burst.money import TenantMoney, estimate_cost, split_cost
from broker.burst.routes import RouteState, route_refusal
from broker.burst.spot import offer_outlook, provisioning_p95_h, spot_refusal
from broker.decision import Action, Decision
from broker.model import JobSpec, Offer, SiteId, SpotMode, TenantId
from broker.placement import (
    HARDWARE_PREFIX,
    Explanation,
    PlacementContext,
    ScoredOffer,
    place,
    rejection_counts,
    rejection_summary,
)
from broker.placement.blocklist import BLOCKED
from broker.placement.health import UNHEALTHY
from broker.policy import Policy

TRANSIENT_RULES = frozenset({BLOCKED, UNHEALTHY})
"""Rejections that may lift by themselves: a job rejected only by these waits, never fails."""


@dataclass(frozen=True)
class BurstInputs:
    """Everything besides the job, offers and policy that the decision depends on."""

    now: datetime
    queued_since: datetime
    money: TenantMoney = field(default_factory=TenantMoney)
    routes: Mapping[SiteId, RouteState] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()
    unhealthy: Mapping[SiteId, str] = field(default_factory=dict)
    burst_pending_since: datetime | None = None
    """When the burst condition was first seen true for this job (hysteresis memory)."""
    queueing_sites: frozenset[str] = frozenset()
    """On-prem sites whose backend keeps its own queue (the job can be sent there to pend)."""
    onprem_adjust: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Partition key (`site/partition`) -> (accelerators already claimed, extra wait seconds)
    from decisions made earlier in the same pass; applied to on-prem offers here."""
    onprem_capacity: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Partition key -> (free units, expected wait seconds) as the backend reports them now;
    overrides the on-prem offers' own `free` and `expected_wait_s`, so the offer list can stay
    one static catalog (and placement's memo stays warm) while capacity changes."""
    projected_wait: Mapping[str, float] = field(default_factory=dict)
    """Partition key -> this job's projected wait there (`broker.burst.projection`: running
    jobs' expected ends and the queue ahead in dispatch order). Where given, it replaces the
    fluid estimate, and a late job bursts at the last responsible moment (deadline minus the
    route's provisioning p95) instead of after the hysteresis."""


_ONPREM: dict[int, tuple[Policy, frozenset[str]]] = {}


def onprem_sites(policy: Policy) -> frozenset[str]:
    """The ids of the policy's on-prem sites (cached per policy object)."""
    hit = _ONPREM.get(id(policy))
    if hit is None or hit[0] is not policy:
        if len(_ONPREM) > 64:
            _ONPREM.clear()
        hit = _ONPREM[id(policy)] = (policy, frozenset(s.id for s in policy.sites if s.partitions))
    return hit[1]


def _cloud_refusal(
    s: ScoredOffer,
    spec: JobSpec,
    tenant: TenantId,
    policy: Policy,
    inputs: BurstInputs,
    slack_spot_ok: bool,
) -> str | tuple[float, float]:
    """Why a cloud offer cannot be used now, or the (cash, voucher) it would take."""
    if s.offer.free is not None and s.offer.free <= 0:
        return f"{s.offer.key}: no stock"
    if s.offer.spot and spec.spot != SpotMode.REQUIRED:
        if not slack_spot_ok:
            return f"{s.offer.key}: deadline too close for spot"
        slack_h = None
        if spec.deadline is not None:
            slack_h = (spec.deadline - inputs.now).total_seconds() / 3600
        why_spot = spot_refusal(spec, s.offer, policy, slack_h=slack_h)
        if why_spot is not None:
            return why_spot
    why = route_refusal(s.offer.site, inputs.routes.get(SiteId(s.offer.site)), policy, inputs.now)
    if why is not None:
        return why
    hours = offer_outlook(spec, s.offer, policy).billed_h if s.offer.spot else None
    total = estimate_cost(spec, s.offer, policy, hours)  # spot: at its expected billed hours
    split = split_cost(tenant, s.offer.site, total, policy, inputs.money.voucher_balances)
    if inputs.money.budget_left is not None and split.cash > inputs.money.budget_left + 1e-9:
        return (
            f"budget: {s.offer.key} would cost {split.cash:.2f} {policy.currency} in cash, "
            f"{max(0.0, inputs.money.budget_left):.2f} left this month"
        )
    if inputs.money.global_left is not None and split.cash > inputs.money.global_left + 1e-9:
        return (
            f"global burst cap: {split.cash:.2f} {policy.currency} needed, "
            f"{max(0.0, inputs.money.global_left):.2f} left"
        )
    return split.cash, split.voucher


def is_onprem(policy: Policy, site_id: str) -> bool:
    """On-prem sites are the ones described by partitions (HPC style), not cloud catalogs."""
    site = policy.site(site_id)
    return site is not None and bool(site.partitions)


def demand(spec: JobSpec) -> int:
    """What a job takes from an offer's `free`: accelerators, or CPU cores when it needs none (× nodes)."""
    return (spec.accelerator_count or math.ceil(spec.resources.cpus)) * spec.resources.nodes


def effective_max_wait(spec: JobSpec, tenant_id: str, policy: Policy) -> timedelta:
    """The job's own max_wait, else the policy default for its priority, tenant kind, or overall."""
    if spec.max_wait is not None:
        return spec.max_wait
    mw = policy.burst.max_wait
    if spec.priority in mw.by_priority:
        return mw.by_priority[spec.priority]
    tenant = policy.tenant(tenant_id)
    if tenant is not None and tenant.kind in mw.by_tenant_kind:
        return mw.by_tenant_kind[tenant.kind]
    return mw.default


def _spot_risk_cost(spec: JobSpec, scored: ScoredOffer, policy: Policy) -> float:
    """Expected extra cost of running on spot: the billed hours lost to interruptions
    (`broker.burst.spot`: restarts from the last checkpoint, or from zero)."""
    if not scored.offer.spot:
        return 0.0
    runtime_h = spec.runtime_estimate.total_seconds() / 3600
    out = offer_outlook(spec, scored.offer, policy, runtime_h)
    if math.isinf(out.billed_h):
        return math.inf
    return scored.terms.get("cost", 0.0) * (out.billed_h / runtime_h - 1.0)


def _safety_lead_s(policy: Policy) -> float:
    """The longest provisioning p95 of any cloud route: past it, a burst may come too late."""
    leads = (provisioning_p95_h(policy, site.id) * 3600 for site in policy.sites if not site.partitions)
    return max(leads, default=0.0)


def _late_cost(wait_s: float, allowed_s: float, policy: Policy) -> float:
    late_h = max(0.0, wait_s - allowed_s) / 3600
    return late_h * policy.objective.wait_hour_cost * policy.burst.late_wait_factor


def decide(
    spec: JobSpec,
    tenant: TenantId,
    offers: Sequence[Offer],
    policy: Policy,
    inputs: BurstInputs,
) -> Decision:
    """Run, wait or burst, with the reasons and the numbers behind the choice."""
    now = inputs.now
    ctx = PlacementContext(
        now=now,
        blocked=inputs.blocked,
        unhealthy_sites=inputs.unhealthy,
        voucher_balances=inputs.money.voucher_balances or None,
    )
    expl = place(spec, tenant, offers, policy, ctx)
    waited = max(0.0, (now - inputs.queued_since).total_seconds())
    max_wait = effective_max_wait(spec, tenant, policy).total_seconds()
    remaining = max(0.0, max_wait - waited)
    numbers: dict[str, Any] = {
        "waited_s": round(waited),
        "max_wait_s": round(max_wait),
        "remaining_wait_s": round(remaining),
    }

    def done(
        action: Action,
        offer: ScoredOffer | None,
        *reasons: str,
        burst: bool = False,
        pending: datetime | None = None,
        **more: Any,
    ) -> Decision:
        # `currency` labels every money figure (costs, cash, voucher: the policy's currency);
        # the offer's price keeps its own currency next to it.
        data = {**numbers, **more, "action": action.value, "currency": policy.currency}
        if offer is not None:
            data["offer_key"] = offer.offer.key
            data["price_per_hour"] = offer.offer.price_per_hour
            data["price_currency"] = offer.offer.currency
            data["price_read_at"] = (
                offer.offer.price_read_at.isoformat() if offer.offer.price_read_at else None
            )
            data["score"] = round(offer.score, 4)
        if pending is not None:
            data["burst_pending_since"] = pending.isoformat()
        return Decision(
            action=action,
            offer=offer.offer if offer else None,
            reasons=reasons,
            data=data,
            policy_hash=policy.hash,
            burst=burst,
            explanation=expl,
        )

    allowed = expl.unranked  # every use below sorts by its own total key
    if not allowed:
        summary = rejection_summary(expl)
        if any(not s.allowed and set(r.rule for r in s.reasons) <= TRANSIENT_RULES for s in expl.offers):
            return done(
                Action.WAIT,
                None,
                "every allowed offer is blocked or unhealthy for now",
                *(f"{r.rule}: {r.message}" for r in summary[:5]),
            )
        reasons = [f"{r.rule}: {r.message}" for r in summary[:10]] or ["no offers at all"]
        return done(Action.REJECT, None, *reasons)

    need = demand(spec)
    per_wait_s = policy.objective.wait_hour_cost / 3600

    live = inputs.onprem_capacity

    def fits_now(s: ScoredOffer) -> bool:
        claimed = inputs.onprem_adjust.get(s.offer.partition, (0, 0.0))[0]
        cap = live.get(s.offer.partition)
        free = s.offer.free if cap is None else cap[0]
        return free is None or free - claimed >= need

    projected = inputs.projected_wait

    def wait(s: ScoredOffer) -> float:
        got = projected.get(s.offer.partition)
        if got is not None:
            return got
        cap = live.get(s.offer.partition)
        base = s.offer.expected_wait_s if cap is None else cap[1]
        raw = base + inputs.onprem_adjust.get(s.offer.partition, (0, 0.0))[1]
        return raw * policy.burst.wait_estimate_factor

    def score(s: ScoredOffer) -> float:
        return s.score + (wait(s) - s.offer.expected_wait_s) * per_wait_s

    home = onprem_sites(policy)
    onprem = [s for s in allowed if s.offer.site in home]
    ready = sorted((s for s in onprem if fits_now(s)), key=lambda s: (score(s), s.offer.site, s.offer.key))
    if ready:
        return done(Action.RUN, ready[0], f"on-prem capacity free at {ready[0].offer.site}")

    def cloud_candidates() -> tuple[list[tuple[float, ScoredOffer, float, float]], list[str]]:
        """The best usable cloud offer (spot risk included) within route limits and money, or
        every refusal when none is usable. Offers are tried best-first by their static cost."""
        slack_spot_ok = True
        if spec.deadline is not None:
            slack = (spec.deadline - now).total_seconds() - spec.runtime_estimate.total_seconds()
            slack_spot_ok = slack >= spec.runtime_estimate.total_seconds() * (
                policy.burst.deadline_slack_factor - 1
            )
        order = sorted(
            (
                (s.score + _spot_risk_cost(spec, s, policy), s.offer.site, s.offer.key, i, s)
                for i, s in enumerate(allowed)
                if s.offer.site not in home
            ),
            key=lambda c: c[:3],
        )
        refused: list[tuple[int, str]] = []
        for total_score, _, _, i, s in order:
            why = _cloud_refusal(s, spec, tenant, policy, inputs, slack_spot_ok)
            if isinstance(why, str):
                refused.append((i, why))
                continue
            return [(total_score, s, why[0], why[1])], []
        return [], [why for _, why in sorted(refused)]

    if not onprem:
        cloud, refused = cloud_candidates()
        if cloud:
            _, best, cash, voucher = cloud[0]
            return done(
                Action.RUN,
                best,
                f"no on-prem offer can run this job; cloud {best.offer.site}",
                burst=True,
                cash=round(cash, 2),
                voucher=round(voucher, 2),
            )
        return done(Action.WAIT, None, "no on-prem offer fits and no cloud offer is usable now", *refused[:5])

    # Partition choice by cost among those where the job starts in time; else the shortest wait.
    on_time = [s for s in onprem if wait(s) <= remaining]
    if on_time and projected:
        queue = min(on_time, key=lambda s: (score(s), wait(s), s.offer.key))
    else:
        queue = min(onprem, key=lambda s: (wait(s), score(s), s.offer.key))
    wait_s = wait(queue)
    lead = _safety_lead_s(policy)
    if queue.offer.partition in projected and wait_s > 0 and remaining <= lead:
        # Past the last responsible moment a start that is not now may slip past the deadline
        # with no time left to burst: count it as late by a provisioning time (the "Can't Be
        # Late" safety net: commit to the sure option when the slack is gone).
        wait_s = max(wait_s, remaining + lead)
    wait_cost = score(queue) + _late_cost(wait_s, remaining, policy)
    numbers.update(
        onprem_site=queue.offer.site,
        onprem_expected_wait_s=round(wait_s),
        onprem_total_cost=round(wait_cost, 2),
    )
    if wait_s <= remaining:
        if queue.offer.site in inputs.queueing_sites:
            return done(
                Action.RUN,
                queue,
                f"{queue.offer.site} expects a wait of {wait_s / 60:.0f} min, "
                f"within the {remaining / 60:.0f} min the job may still wait; sent to its queue",
            )
        return done(
            Action.WAIT,
            queue,
            f"waiting on-prem: expected wait {wait_s / 60:.0f} min is within "
            f"the {remaining / 60:.0f} min the job may still wait",
        )
    cloud, refused = cloud_candidates()
    if not cloud:
        return done(
            Action.WAIT,
            queue,
            f"on-prem wait {wait_s / 60:.0f} min exceeds max_wait, but no cloud offer is usable",
            *refused[:5],
        )
    cloud_cost, best, cash, voucher = cloud[0]
    numbers.update(cloud_total_cost=round(cloud_cost, 2), cloud_offer=best.offer.key)
    if cloud_cost >= wait_cost:
        return done(
            Action.WAIT,
            queue,
            f"waiting is cheaper: on-prem {wait_cost:.2f} vs cloud "
            f"{cloud_cost:.2f} {policy.currency} ({best.offer.key})",
        )
    if queue.offer.partition in projected:
        # Capacity may still free sooner than projected: wait until the last moment a burst
        # can still start the job on time (its deadline minus the route's provisioning p95).
        lead = provisioning_p95_h(policy, best.offer.site) * 3600
        if remaining > lead:
            return done(
                Action.WAIT,
                queue,
                f"projected on-prem start in {wait_s / 60:.0f} min is late; bursting to "
                f"{best.offer.site} at the last responsible moment, in {(remaining - lead) / 60:.0f} min",
                burst_in_s=round(remaining - lead),
            )
        return done(
            Action.RUN,
            best,
            f"burst: projected on-prem start in {wait_s / 60:.0f} min is past the "
            f"{remaining / 60:.0f} min left of max_wait and {best.offer.site} costs {cloud_cost:.2f} "
            f"< {wait_cost:.2f} {policy.currency} for waiting",
            burst=True,
            cash=round(cash, 2),
            voucher=round(voucher, 2),
        )
    since = inputs.burst_pending_since or now
    hysteresis = policy.burst.hysteresis.total_seconds()
    held = (now - since).total_seconds()
    if held < hysteresis and remaining > hysteresis:
        return done(
            Action.WAIT,
            queue,
            f"burst to {best.offer.site} pending: condition held {held:.0f}s "
            f"of the {hysteresis:.0f}s hysteresis",
            pending=since,
        )
    return done(
        Action.RUN,
        best,
        f"burst: on-prem wait {wait_s / 60:.0f} min exceeds the "
        f"{remaining / 60:.0f} min left of max_wait and {best.offer.site} costs {cloud_cost:.2f} "
        f"< {wait_cost:.2f} {policy.currency} for waiting",
        burst=True,
        cash=round(cash, 2),
        voucher=round(voucher, 2),
    )


def explain_json(decision: Decision) -> dict[str, Any]:
    """The explanation as the decision sees it: `chosen` is the decision's offer (run, burst
    or wait there), offers are listed decision first, then allowed, then rejected with the
    rules that block the job before hardware misfits; `rejections` counts offers per rule."""
    expl: Explanation | None = decision.explanation
    if expl is None:
        body: dict[str, Any] = {"chosen": None, "offers": [], "policy_hash": decision.policy_hash}
        body["rejections"], body["allowed_offers"] = [], 0
    else:
        body = expl.to_json()
        body["placement_best"] = body["chosen"]
        picked = None
        if decision.offer is not None:
            picked = next((s for s in expl.offers if s.offer.key == decision.offer.key), None)
        ordered = sorted(
            expl.offers,
            key=lambda s: (s is not picked, not s.allowed, _is_misfit(s)),
        )
        body["chosen"] = expl.offer_json(picked) if picked is not None else None
        body["offers"] = [expl.offer_json(s) for s in ordered]
        body["rejections"] = [
            {"rule": rule, "offers": n, "message": message}
            for rule, n, message in rejection_counts(expl)
        ]
        body["allowed_offers"] = len(expl.allowed)
    body["decision"] = {
        "action": decision.action.value,
        "burst": decision.burst,
        "reasons": list(decision.reasons),
        **dict(decision.data),
    }
    return body


def _is_misfit(scored: ScoredOffer) -> bool:
    return not scored.allowed and all(r.rule.startswith(HARDWARE_PREFIX) for r in scored.reasons)
