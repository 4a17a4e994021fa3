"""The policy under test as a simulator strategy: the live decision step, nothing else.

`PolicyStrategy.decide` is `broker.burst.step.decide_in_pass`, the function
`broker.planning.Planner.decide` calls; the rest only reads the decision's numbers to know
when the answer could change (its timers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime

from broker.burst import TenantMoney
from broker.burst.claims import LateClaims, claim_premium
from broker.burst.cloud import money_refused, onprem_offers
from broker.burst.inputs import onprem_sites
from broker.burst.leads import safety_lead_s
from broker.burst.snapshot import PassSnapshot, partition_key
from broker.burst.step import build_inputs, decide_in_pass
from broker.decision import Action, Decision
from broker.fairshare import held_back
from broker.placement import PlacementContext, place
from broker.placement.scored import Scored
from broker.policy import Policy
from broker.quota_bar import never_runs, refused_at_submit
from broker.sim.backends import backoff_cap_s
from broker.sim.jobs import SimJob, shape_of
from broker.sim.queues import LaunchQueue

Projector = Callable[[SimJob], tuple[Mapping[str, float], LaunchQueue, Mapping[str, float], LateClaims]]

MIN_GAP_S = 60.0
"""Shortest timer: re-deciding more often than this cannot change much."""


class PolicyStrategy:
    """The broker's own run / wait / burst decision."""

    name = "policy"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.hysteresis_s = policy.burst.hysteresis.total_seconds()
        self.lead_now = safety_lead_s(policy)
        """The longest provisioning p95 of any cloud route (the policy's, or as observed when
        longer), as of the last decision."""
        self.cloudless: set[int] = set()
        """Jobs last decided to wait with no cloud offer allowed at all, nothing blocked (placement's
        verdicts do not change with time; budgets, stock and routes refuse allowed offers). Only
        freed capacity can start them, and capacity events re-decide the queue's heads, so their
        backoff timer only looks deeper and may keep doubling: capped at 2 h, weeks of queue
        re-decided each of them ~12 times a day."""
        self.admitted: set[int] = set()
        """Jobs submission would take (`_never_runs`, asked at a job's first decision): one it
        refuses (no quota ever admits it, or only spot over the restart limit could run it) is
        rejected, as the broker refused it; a replay counted it as waiting for ever."""
        self.money_bound: set[int] = set()
        """Jobs last decided to wait because money refused cloud offers they could use (`money_refused`):
        their backoff doubles up to the next budget month instead of stopping at 2 h. An overloaded
        trace whose budgets run out early otherwise re-decided each such job every 2 h for the rest
        of the simulated year (97% of 150k decisions on 2,000 jobs)."""
        self.projector: Projector | None = None
        """Set by the engine when the policy's wait model is `projected`: the job's projected
        wait per partition, the bursts committed per cloud route, the tenants' fair-share
        ratios and the late claims, each job's own kept as it is decided (the live dispatcher's
        shell supplies the same from its adapters and store, `broker.dispatch.waits`)."""
        self.runtime_ratio: Callable[[str], float] | None = None
        """Set by the engine: a tenant's learned actual/estimated runtime ratio, as the live
        planner reads it from the store's finished jobs (`BurstInputs.runtime_ratio`)."""

    def _never_runs(self, job: SimJob, snap: PassSnapshot) -> list[str]:
        """Why submission refuses the job, as the broker's `Planner.admit` asks it: on the catalog,
        whatever is blocked or sick now (a stock-out at its arrival refused accepted jobs)."""
        spec = shape_of(job, self.policy) or job.spec
        expl = place(spec, job.tenant, snap.offers, self.policy, PlacementContext(now=snap.now))
        unranked = expl.unranked  # (its offers, in the same order, without building each scored one)
        allowed = unranked.offers() if isinstance(unranked, Scored) else [s.offer for s in unranked]
        return never_runs(self.policy, job.tenant, job.spec, allowed) if allowed else []

    def decide(
        self, job: SimJob, snap: PassSnapshot, money: TenantMoney, pending: datetime | None
    ) -> Decision:
        projected, ahead, firm, claims, ratios, gap = None, None, False, None, None, 0.0
        if self.projector is not None:
            projected, launches, ratios, claims = self.projector(job)
            claims.put(str(job.index), None)  # its own claim is no reason to yield
            ahead = launches.ahead(job.arrival_s + job.max_wait_s, job.index)
            gap = self.policy.burst.firm_deadline_share_gap
            firm = held_back(ratios, job.tenant, gap)
        learned = self.runtime_ratio
        inputs = build_inputs(
            snap,
            queued_since=job.created_at,
            money=money,
            pending_since=pending,
            queueing_sites=frozenset(),
            projected_wait=projected,
            launches_ahead=ahead,
            firm_deadline=firm,
            late_claims=None if claims is None else claims.view(ratios, job.tenant, gap),
            runtime_ratio=1.0 if learned is None or projected is None else learned(job.tenant),
        )
        d = decide_in_pass(job.spec, job.tenant, snap, self.policy, inputs)
        if job.index not in self.admitted:
            never = self._never_runs(job, snap)
            if never:
                d = refused_at_submit(d, never)
            else:
                self.admitted.add(job.index)
        self.lead_now = safety_lead_s(self.policy, inputs)  # (read by `timer` for this decision)
        if d.action == Action.WAIT and d.facts.cloud_offer is None and self._no_cloud_allowed(d, snap):
            self.cloudless.add(job.index)
        else:
            self.cloudless.discard(job.index)
        if self.wants_cloud(d) and money_refused(d.cloud_refusals):
            self.money_bound.add(job.index)
        else:
            self.money_bound.discard(job.index)
        if claims is not None:
            claims.note(d, inputs, job.demand)  # it yielded: the top claim there is decided next
            premium = claim_premium(d.facts, self.policy)
            late = premium is not None and d.action == Action.WAIT and d.offer is not None
            part = partition_key(d.offer) if late and d.offer is not None else None
            claims.put(str(job.index), part, job.demand, premium or 0.0, job.tenant)
        return d

    def _no_cloud_allowed(self, d: Decision, snap: PassSnapshot) -> bool:
        """Placement allowed the job no cloud offer, with nothing blocked (so none ever will)."""
        expl = d.explanation
        if expl is None or snap.blocked:
            return False
        allowed = expl.unranked
        return len(onprem_offers(allowed, onprem_sites(self.policy))) == len(allowed)

    def candidates(self, job: SimJob, decision: Decision) -> tuple[str, ...]:
        expl = decision.explanation
        if expl is None:
            return ()
        keys = {partition_key(s.offer) for s in onprem_offers(expl.unranked, onprem_sites(self.policy))}
        return tuple(sorted(keys))

    def timer(self, job: SimJob, decision: Decision, now_s: float, backoff_s: float) -> float | None:
        f = decision.facts
        if f.burst_in_s is not None:  # the last responsible moment to burst
            return now_s + f.burst_in_s + 1.0
        if f.burst_pending_since is not None:
            return (f.burst_pending_since - job.epoch).total_seconds() + self.hysteresis_s + 1.0
        wait, remaining = f.onprem_expected_wait_s, f.remaining_wait_s
        if wait is not None and wait <= remaining:
            gap = remaining - wait + 1.0
            if self.projector is not None:  # look again before the last moment a burst could still help
                gap = min(gap, remaining - self.lead_now)
            return now_s + max(MIN_GAP_S, gap)
        bound = job.index in self.money_bound
        cap = math.inf if job.index in self.cloudless else backoff_cap_s(now_s, bound, job.epoch)
        return now_s + min(cap, max(backoff_s, self.policy.burst.blocklist_ttl.capacity.total_seconds()))

    def wants_cloud(self, decision: Decision) -> bool:
        """Held back only by the cloud side: it would burst, but no cloud offer is usable now."""
        f = decision.facts
        if f.burst_pending_since is not None or f.cloud_offer is not None:
            return False
        wait = f.onprem_expected_wait_s
        return wait is None or wait > f.remaining_wait_s
