"""The burst decision: run on-prem now, wait on-prem, or burst to a cloud offer. Pure.

Rules, in order (a job past its latest start, `deadline` − runtime, is refused first: none meets it):
1. Placement (`broker.placement.place`) ranks every offer; only allowed offers count.
2. On-prem capacity free now → run there (the best-scoring free on-prem offer), unless, with
   projected waits, a cheaper partition (its projected wait charged at wait_hour_cost) is
   projected to start the job with a provisioning p95 to spare: the job waits for that one; or
   unless a late job waiting to burst from that partition needs the capacity this job would take
   and its burst would cost more than this job's (`BurstInputs.late_claims`): the job yields.
3. On-prem would make the job wait W. With W within what is left of its `max_wait` (and before
   its latest start, `deadline` − runtime), it waits on-prem (a queueing site, Slurm, gets it now).
4. Beyond it, the job bursts to the best allowed cloud offer whose total (price × runtime + its
   wait cost + spot risk) beats waiting (on-prem cost + W's wait cost + the lateness past max_wait),
   within the tenant's budget, the global cap and the route limits. The condition must hold for
   `burst.hysteresis` unless less wait is left; with projected waits the job bursts at its last
   responsible moment instead (deadline minus the route's provisioning p95, one p95 earlier per
   full round of `max_provisioning` bursts lined up there ahead of it).
   A firm deadline (`BurstInputs.firm_deadline`: fair share owes the tenant the capacity it waits
   for) skips the cost comparison: projected late, the job bursts at that moment ("Can't Be Late").
5. A job no on-prem offer can run at all goes straight to the best cloud offer.

The result is a typed, frozen `broker.decision.Decision`; its JSON is made by `broker.serde_decision`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from broker.burst.cloud import CloudPick, best_cloud, onprem_offers, passed_over_reasons
from broker.burst.inputs import (
    TRANSIENT_RULES,
    BurstInputs,
    deadline_missed,
    demand,
    effective_max_wait,
    is_onprem,
    onprem_sites,
)
from broker.burst.leads import launch_lead_s, safety_lead_s
from broker.burst.projection import NEVER_S, minutes, start_text
from broker.decision import Action, Decision, DecisionFacts
from broker.model import JobSpec, Offer, TenantId
from broker.placement import Explanation, PlacementContext, ScoredOffer, place
from broker.placement.refusal import refusal_summary
from broker.policy import Policy

__all__ = ["BurstInputs", "decide", "demand", "effective_max_wait", "is_onprem", "onprem_sites"]


@dataclass(slots=True)
class _View:
    """One decision in progress: the job, its placement, what is left of its wait, the facts so far."""

    spec: JobSpec
    tenant: TenantId
    policy: Policy
    inputs: BurstInputs
    expl: Explanation
    remaining: float
    facts: dict[str, object]  # the fields every decision's facts carry (waited, max_wait, remaining...)
    left_of: str = "of max_wait"  # what bounds `remaining`, for the reasons: max_wait or the deadline
    known: dict[int, tuple[float, float]] = field(default_factory=dict)  # id(offer) -> (wait, score)
    raised_from: float | None = None  # the projected wait the safety net counted late (`_queue_choice`)
    noted: dict[str, object] = field(default_factory=dict)  # fields noted so far (`note`), for `done`

    def note(self, **fields: object) -> None:
        """Set facts fields (later ones win, as a `replace` each would)."""
        self.noted.update(fields)

    def done(
        self,
        action: Action,
        offer: ScoredOffer | None,
        *reasons: str,
        burst: bool = False,
        pick: CloudPick | None = None,
        refused: Sequence[str] = (),
        **more: float | datetime | None,
    ) -> Decision:
        fields = {**self.facts, **self.noted, **more}  # built once (later fields win, as in sequence)
        if offer is not None:
            fields["score"] = round(offer.score, 4)
        over = () if pick is None else pick.passed_over  # better-scored cloud offers not taken
        if pick is not None:
            fields["cash"], fields["voucher"] = round(pick.cash, 2), round(pick.voucher, 2)
            reasons = (*reasons, *passed_over_reasons(over))
        facts = DecisionFacts(**fields)  # type: ignore[arg-type]
        return Decision(
            action=action,
            offer=offer.offer if offer else None,
            reasons=reasons,
            facts=facts,
            policy_hash=self.policy.hash,
            burst=burst,
            explanation=self.expl,
            passed_over=over,
            cloud_refusals=tuple(refused),
        )

    def fits_now(self, s: ScoredOffer, need: int) -> bool:
        free = self.inputs.free_units(s.offer)
        return (free is None or free >= need) and self.inputs.nodes_fit(s.offer, self.spec)

    def wait(self, s: ScoredOffer) -> float:
        got = self.known.get(id(s))
        return (got or self._know(s))[0]

    def score(self, s: ScoredOffer) -> float:
        got = self.known.get(id(s))
        return (got or self._know(s))[1]

    def _know(self, s: ScoredOffer) -> tuple[float, float]:
        part = s.offer.partition
        wait = self.inputs.projected_wait.get(part)
        if wait is not None:
            wait = min(wait, NEVER_S)  # "never" (inf) stays a number that rounds and compares
        else:
            cap = self.inputs.onprem_capacity.get(part)
            base = s.offer.expected_wait_s if cap is None else cap[1]
            raw = base + self.inputs.onprem_adjust.get(part, (0, 0.0))[1]
            wait = raw * self.policy.burst.wait_estimate_factor
        per_wait_s = self.policy.objective.wait_hour_cost / 3600
        got = self.known[id(s)] = (wait, s.score + (wait - s.offer.expected_wait_s) * per_wait_s)
        return got

    def cloud(self) -> CloudPick | list[str]:
        return best_cloud(
            self.spec, self.tenant, self.expl.unranked, self.policy, self.inputs, onprem_sites(self.policy)
        )


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
        block_reasons=inputs.block_reasons,
        unhealthy_sites=inputs.unhealthy,
        drained_sites=inputs.drained,
        no_images=inputs.no_images,
        voucher_balances=inputs.money.voucher_balances or None,
    )
    expl = place(spec, tenant, offers, policy, ctx)
    waited = max(0.0, (now - inputs.queued_since).total_seconds())
    max_wait = effective_max_wait(spec, tenant, policy).total_seconds()
    remaining, left_of = max(0.0, max_wait - waited), "of max_wait"
    latest = (spec.deadline - now - spec.runtime_estimate).total_seconds() if spec.deadline else math.inf
    if 0 <= latest < remaining:  # its latest start bounds the wait first (once past, nothing meets it)
        remaining, left_of = max(0.0, latest), "before its latest start (deadline - runtime)"
    facts: dict[str, object] = {
        "waited_s": round(waited),
        "max_wait_s": round(max_wait),
        "remaining_wait_s": round(remaining),
        "currency": policy.currency,
    }
    v = _View(spec, tenant, policy, inputs, expl, remaining, facts, left_of)
    if latest < 0 and (missed := deadline_missed(spec, now)):  # (on free capacity too: none meets it)
        return v.done(Action.REJECT, None, missed)
    allowed = expl.unranked  # every use below picks by its own total key
    if not allowed:
        return _nothing_allowed(v)
    onprem = onprem_offers(allowed, onprem_sites(policy))
    need = demand(spec)
    ready = [s for s in onprem if v.fits_now(s, need)]
    if ready:
        best = min(ready, key=lambda s: (v.score(s), s.offer.site, s.offer.key))
        cheaper = _cheaper_in_time(v, onprem, best)
        if cheaper is not None:
            where = cheaper.offer
            v.note(onprem_site=where.site, onprem_partition=where.partition)
            return v.done(
                Action.WAIT,
                cheaper,
                f"waiting for {cheaper.offer.partition}: projected to start it in "
                f"{v.wait(cheaper) / 60:.0f} min, within {_bound(v)}, for less than "
                f"{best.offer.partition} now",
                onprem_expected_wait_s=round(v.wait(cheaper)),
            )
        return _yield_to_late(v, best, need) or v.done(
            Action.RUN, best, f"on-prem capacity free at {best.offer.site}"
        )
    if not onprem:
        return _cloud_only(v)
    return _wait_or_burst(v, onprem)


def _bound(v: _View) -> str:
    """What bounds the job's wait, for a reason: its max_wait, or its latest start when that is sooner."""
    left = f"the {v.remaining / 60:.0f} min left {v.left_of}"
    return "its max_wait" if v.left_of == "of max_wait" else left


def _cheaper_in_time(v: _View, onprem: list[ScoredOffer], best: ScoredOffer) -> ScoredOffer | None:
    """With projected waits: a partition that costs less than the one free now, its projected wait
    charged at wait_hour_cost, and is projected to start the job in time with a provisioning p95
    to spare for a burst should the projection slip."""
    projected = v.inputs.projected_wait
    if not projected:
        return None
    spare = v.remaining - safety_lead_s(v.policy, v.inputs)
    now = v.score(best) - v.wait(best) * v.policy.objective.wait_hour_cost / 3600  # it starts now
    fits = [
        s for s in onprem if projected.get(s.offer.partition, math.inf) <= spare and v.score(s) < now - 1e-9
    ]
    return min(fits, key=lambda s: (v.score(s), s.offer.key)) if fits else None


def _yield_to_late(v: _View, best: ScoredOffer, need: int) -> Decision | None:
    """A late job would burst from `best`'s partition unless it gets the units this job would take
    (it fits the free units, not what this job leaves) and its premium (cloud total − on-prem cost)
    is above this job's: this job waits and leaves them to it. Not under a firm deadline, nor past
    this job's own last responsible moment."""
    part = best.offer.partition
    claims = v.inputs.late_claims.get(part)
    free, lead = v.inputs.free_units(best.offer), safety_lead_s(v.policy, v.inputs)
    if not claims or v.inputs.firm_deadline or free is None or v.remaining <= lead:
        return None  # (a job with no time left to burst itself keeps its start)
    top = max((p for u, p in claims.values() if free - need < u <= free), default=None)
    if top is None:
        return None
    pick = v.cloud()
    if isinstance(pick, list) or (mine := pick.total - v.score(best)) >= top:
        return None  # no cloud to fall back on, or its own burst would cost as much
    v.note(onprem_site=best.offer.site, onprem_partition=best.offer.partition)
    return v.done(
        Action.WAIT,
        best,
        f"yielding {part} to a late job whose burst would cost {top:.2f} {v.policy.currency} more "
        f"than on-prem; this job's would cost {mine:.2f} more",
        onprem_expected_wait_s=round(v.wait(best)),
    )


def _nothing_allowed(v: _View) -> Decision:
    """No offer is allowed: wait when only transient blocks stand in the way, else reject."""
    summary = refusal_summary(v.expl, v.spec, v.tenant, v.policy, PlacementContext(now=v.inputs.now))
    if any(not s.allowed and {r.rule for r in s.reasons} <= TRANSIENT_RULES for s in v.expl.offers):
        return v.done(
            Action.WAIT,
            None,
            "every allowed offer is blocked, drained or unhealthy for now",
            *(f"{r.rule}: {r.message}" for r in summary[:5]),
        )
    reasons = [f"{r.rule}: {r.message}" for r in summary[:10]] or ["no offers at all"]
    return v.done(Action.REJECT, None, *reasons)


def _cloud_only(v: _View) -> Decision:
    """No on-prem offer can run the job at all: the best usable cloud offer, or wait for one."""
    pick = v.cloud()
    if isinstance(pick, list):
        why = "no on-prem offer fits and no cloud offer is usable now"
        return v.done(Action.WAIT, None, why, *pick[:5], refused=pick)
    return v.done(
        Action.RUN,
        pick.scored,
        f"no on-prem offer can run this job; cloud {pick.scored.offer.site}",
        burst=True,
        pick=pick,
    )


def _queue_choice(v: _View, onprem: list[ScoredOffer]) -> tuple[ScoredOffer, float]:
    """The partition to wait in (by cost among those on time, else the shortest wait) and its wait."""
    projected = v.inputs.projected_wait
    on_time = [s for s in onprem if v.wait(s) <= v.remaining]
    if on_time and projected:
        queue = min(on_time, key=lambda s: (v.score(s), v.wait(s), s.offer.key))
    else:
        queue = min(onprem, key=lambda s: (v.wait(s), v.score(s), s.offer.key))
    wait_s = v.wait(queue)
    lead = safety_lead_s(v.policy, v.inputs)
    if queue.offer.partition in projected and v.remaining <= lead and wait_s < v.remaining + lead:
        # Past the last responsible moment a start that is not now (nothing fits now: a projected 0
        # is a stale end) may slip past the deadline with no time left to burst: count it late by a
        # provisioning time ("Can't Be Late": commit to the sure option when the slack is gone).
        v.raised_from, wait_s = wait_s, v.remaining + lead
    return queue, wait_s


def _apart(v: _View, s: ScoredOffer) -> str:
    """Why the job does not start where enough units are free in all: not on few enough nodes."""
    nodes, units, free = max(1, v.spec.resources.nodes), demand(v.spec), v.inputs.free_units(s.offer)
    each = f"no node has {units} of them" if nodes == 1 else f"not {units // nodes} on each of {nodes} nodes"
    fits = (free is not None and free < units) or v.inputs.nodes_fit(s.offer, v.spec)
    return "" if fits else f" (units are free, but {each})"


def _wait_or_burst(v: _View, onprem: list[ScoredOffer]) -> Decision:
    """On-prem has no room now: wait in the chosen partition, or burst when waiting costs more."""
    queue, wait_s = _queue_choice(v, onprem)
    wait_cost = v.score(queue) + _late_cost(wait_s, v.remaining, v.policy)
    v.note(onprem_site=queue.offer.site, onprem_partition=queue.offer.partition,
           onprem_expected_wait_s=round(wait_s), onprem_total_cost=round(wait_cost, 2))
    left_min = v.remaining / 60
    if wait_s <= v.remaining:
        if queue.offer.site in v.inputs.queueing_sites:
            return v.done(
                Action.RUN,
                queue,
                f"{queue.offer.site} expects a wait of {minutes(wait_s)}{_apart(v, queue)}, "
                f"within the {left_min:.0f} min the job may still wait; sent to its queue",
            )
        return v.done(
            Action.WAIT,
            queue,
            f"waiting on-prem: expected wait {minutes(wait_s)} is within "
            f"the {left_min:.0f} min the job may still wait",
        )
    pick = v.cloud()
    if isinstance(pick, list):
        limit = "max_wait" if v.left_of == "of max_wait" else f"the {left_min:.0f} min left {v.left_of}"
        said = start_text(wait_s, v.raised_from)
        said = f"on-prem wait {minutes(wait_s)}" if v.raised_from is None else said
        reason = f"{said} exceeds {limit}, but no cloud offer is usable"
        return v.done(Action.WAIT, queue, reason, *pick[:5], refused=pick)
    best = pick.scored.offer
    v.note(cloud_total_cost=round(pick.total, 2), cloud_offer=best.key)
    firm = v.inputs.firm_deadline and queue.offer.partition in v.inputs.projected_wait
    if pick.total >= wait_cost and not firm:
        return v.done(
            Action.WAIT,
            queue,
            f"waiting is cheaper: on-prem {wait_cost:.2f} vs cloud "
            f"{pick.total:.2f} {v.policy.currency} ({best.key})",
        )
    why = (
        f"{left_min:.0f} min left {v.left_of} and {best.site} costs {pick.total:.2f} "
        f"< {'∞' if wait_s >= NEVER_S else f'{wait_cost:.2f}'} {v.policy.currency} for waiting"
        if pick.total < wait_cost
        else f"{left_min:.0f} min left {v.left_of}, firm (the tenant is owed capacity held by a tenant "
        f"far over its fair share); {best.site} costs {pick.total:.2f} {v.policy.currency}"
    )
    if queue.offer.partition in v.inputs.projected_wait:
        return _burst_at_last_moment(v, queue, pick, wait_s, why)
    return _burst_after_hysteresis(v, queue, pick, wait_s, why)


def _burst_at_last_moment(v: _View, queue: ScoredOffer, pick: CloudPick, wait_s: float, why: str) -> Decision:
    """Projected waits: capacity may still free sooner than projected, so wait until the last
    moment a burst can still start the job on time (its deadline minus the route's provisioning p95)."""
    site = pick.scored.offer.site
    lead = launch_lead_s(v.policy, v.inputs, site)
    if v.remaining > lead:
        return v.done(
            Action.WAIT,
            queue,
            f"{start_text(wait_s, v.raised_from)} is late; bursting to "
            f"{site} at the last responsible moment, in {(v.remaining - lead) / 60:.0f} min",
            burst_in_s=round(v.remaining - lead),
        )
    return v.done(
        Action.RUN,
        pick.scored,
        f"burst: {start_text(wait_s, v.raised_from)} is past the {why}",
        burst=True,
        pick=pick,
    )


def _burst_after_hysteresis(
    v: _View, queue: ScoredOffer, pick: CloudPick, wait_s: float, why: str
) -> Decision:
    """Fluid waits: burst once the condition has held for `burst.hysteresis` (or time runs out)."""
    now = v.inputs.now
    since = v.inputs.burst_pending_since or now
    hysteresis = v.policy.burst.hysteresis.total_seconds()
    held = (now - since).total_seconds()
    if held < hysteresis and v.remaining > hysteresis:
        return v.done(
            Action.WAIT,
            queue,
            f"burst to {pick.scored.offer.site} pending: condition held {held:.0f}s "
            f"of the {hysteresis:.0f}s hysteresis",
            burst_pending_since=since,
        )
    return v.done(
        Action.RUN,
        pick.scored,
        f"burst: on-prem wait {minutes(wait_s)} exceeds the {why}",
        burst=True,
        pick=pick,
    )


def _late_cost(wait_s: float, allowed_s: float, policy: Policy) -> float:
    late_h = max(0.0, wait_s - allowed_s) / 3600
    return late_h * policy.objective.wait_hour_cost * policy.burst.late_wait_factor
