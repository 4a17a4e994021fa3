"""Baseline strategies: alternative decision functions over the same `place()` output.

Each baseline ranks nothing itself: it takes the allowed offers `place()` returned for the
job (static facts, re-filtered by `place()` while failover blocks are active) and applies a
simpler rule to them.

- `onprem-only`: never burst a job on-prem can run; wait for capacity, which goes to waiting
  jobs in fair-share order with backfill: a job that fits starts ahead of a bigger one that does
  not (unless `fair_share.hold_for_under_share` holds it for an in-quota or under-share job).
- `cloud-cheapest`: burst everything at once to the cheapest allowed cloud offer (route
  limits ignored; budgets and failover blocks respected).
- `cheapest-offer` (SkyPilot-like): the cheapest allowed offer that is available now, on-prem
  at its shadow price; no wait model, so a full partition fails over to the next cheapest.

Jobs no on-prem partition can run go to their cheapest cloud offer in every strategy, and
jobs no cloud can run wait for on-prem in every strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from broker.burst import TenantMoney, route_refusal
from broker.burst.cloud import money_refusal
from broker.burst.snapshot import PassSnapshot, partition_key
from broker.decision import Action, Decision, DecisionFacts
from broker.model import Offer, SiteId, SpotMode
from broker.placement import PlacementContext, place
from broker.policy import Policy
from broker.sim.backends import backoff_cap_s
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob, shape_of

Kind = Literal["onprem-only", "cloud-cheapest", "cheapest-offer"]
BASELINES: tuple[Kind, ...] = ("onprem-only", "cloud-cheapest", "cheapest-offer")


class Baseline:
    def __init__(self, kind: Kind, policy: Policy, facts: Sequence[JobFacts]) -> None:
        self.name: str = kind
        self.kind = kind
        self.policy = policy
        self.facts = facts
        self.ttl_s = policy.burst.blocklist_ttl.capacity.total_seconds()
        self._free: tuple[PassSnapshot | None, dict[str, int]] = (None, {})
        self._listed: tuple[Sequence[Offer] | None, list[tuple[str, int]]] = (None, [])
        self._onprem_sites = frozenset(site.id for site in policy.sites if site.partitions)
        self._verdicts: dict[frozenset[str], dict[str, bool]] = {}
        """Per set of blocks, each cloud offer key's verdict (see `_usable`)."""
        self._on_demand: dict[int, tuple[Sequence[Offer], Sequence[Offer], Sequence[Offer]]] = {}
        """`_lists` of jobs decided on-demand only (spot never, or no more)."""
        self.money_bound: set[int] = set()
        """Jobs whose last decision found a cloud offer only money refused: their backoff runs to
        the next budget month, as the policy's (`PolicyStrategy.money_bound`). Capped at 2 h, a
        year of spent budgets re-decided each such job ~4,400 times: 6 M decisions, 150-220 s per
        baseline on a 3,000-job trace."""

    def _lists(self, job: SimJob) -> tuple[Sequence[Offer], Sequence[Offer], Sequence[Offer]]:
        """(on-prem in placement order, cloud by cost, everything by cost) for one job."""
        f = self.facts[job.index]
        if job.spec.spot != SpotMode.NEVER:
            return f.onprem_ranked, f.cloud_by_cost, f.by_cost
        got = self._on_demand.get(job.index)
        if got is None:  # off spot after its interruptions (`broker.sim.spot_rule`), as the broker's
            cloud = tuple(o for o in f.cloud_by_cost if not o.spot)
            by_cost = tuple(o for o in f.by_cost if not o.spot)
            got = self._on_demand[job.index] = (f.onprem_ranked, cloud, by_cost)
        return got

    # What the pass says ---------------------------------------------------------------

    def _free_now(self, snap: PassSnapshot, key: str) -> int:
        if self._free[0] is not snap:
            if self._listed[0] is not snap.offers:  # the run's one catalog (frozen offers): read once
                known = [(partition_key(o), o.free) for o in snap.offers if o.site in self._onprem_sites]
                self._listed = (snap.offers, [(key, n) for key, n in known if n is not None])
            free = dict(self._listed[1])
            for part, (units, _) in snap.capacity.items():
                free[part] = units
            self._free = (snap, free)
        return self._free[1].get(key, 0) - snap.claimed.get(key, 0)

    def _usable(self, job: SimJob, snap: PassSnapshot, offers: Sequence[Offer]) -> Sequence[Offer]:
        """Cloud offers still allowed under the pass's failover blocks (placement decides).

        The offers passed static placement for this job already, so a block is the only new
        reason to refuse one: placement's verdict on each offer is kept per set of blocks, for
        every offer of the job asking (the verdicts of all sets seen are kept: blocks come and
        go). It is asked about the job's shape (`shape_spec`) over the pass's whole catalog,
        so its memo answers every job of that shape while the blocks stay the same."""
        if not snap.blocked or not offers:
            return offers
        verdicts = self._verdicts.get(snap.blocked)
        if verdicts is None:
            if len(self._verdicts) >= 4096:
                self._verdicts.clear()
            verdicts = self._verdicts[snap.blocked] = {}
        out: list[Offer] = []
        for i in range(0, len(offers), 8):
            chunk = offers[i : i + 8]
            if any(o.key not in verdicts for o in chunk):
                ctx = PlacementContext(now=snap.now, blocked=snap.blocked)
                spec = shape_of(job, self.policy) or job.spec
                keep = {s.offer.key for s in place(spec, job.tenant, snap.offers, self.policy, ctx).unranked}
                verdicts.update((o.key, o.key in keep) for o in offers if o.key not in verdicts)
            out.extend(o for o in chunk if verdicts[o.key])
            if out:
                break
        return out

    def _money_ok(
        self, job: SimJob, offer: Offer, money: TenantMoney, now: datetime
    ) -> tuple[float, float] | None:
        split = money_refusal(job.spec, offer, job.tenant, self.policy, money, now)  # as the policy's
        return None if isinstance(split, str) else (split.cash, split.voucher)

    def _route_refused(self, offer: Offer, snap: PassSnapshot) -> bool:
        route = snap.routes.get(SiteId(offer.site))
        return route_refusal(offer.site, route, self.policy, snap.now) is not None

    # Decisions ------------------------------------------------------------------------

    def decide(
        self, job: SimJob, snap: PassSnapshot, money: TenantMoney, pending: datetime | None
    ) -> Decision:
        self.money_bound.discard(job.index)
        if not self.facts[job.index].allowed:
            return Decision(Action.REJECT, reasons=("no allowed offer",))
        onprem, cloud, by_cost = self._lists(job)
        if self.kind == "cheapest-offer":
            return self._cheapest(job, snap, money, by_cost)
        if self.kind == "cloud-cheapest" or not onprem:
            run = self._burst(job, snap, money, cloud, limits=self.kind != "cloud-cheapest")
            if run is not None or not onprem:
                return run or Decision(Action.WAIT, reasons=("no cloud offer usable now",))
        return self._onprem(job, snap, onprem)

    def _onprem(self, job: SimJob, snap: PassSnapshot, onprem: Sequence[Offer]) -> Decision:
        for o in onprem:
            if self._free_now(snap, partition_key(o)) >= job.demand:
                snap.claim(o, job.spec)
                return Decision(Action.RUN, o, ("on-prem capacity free",))
        snap.enqueue(onprem[0], job.spec)
        return Decision(Action.WAIT, onprem[0], ("waiting for on-prem",))

    def _burst(
        self, job: SimJob, snap: PassSnapshot, money: TenantMoney, cloud: Sequence[Offer], *, limits: bool
    ) -> Decision | None:
        for o in self._usable(job, snap, cloud):
            if limits and self._route_refused(o, snap):
                continue
            burst = self._burst_if_paid(job, o, money, "cheapest cloud offer", snap)
            if burst is not None:
                return burst
        return None

    def _burst_if_paid(
        self, job: SimJob, offer: Offer, money: TenantMoney, reason: str, snap: PassSnapshot
    ) -> Decision | None:
        """A burst to `offer` when the tenant's money covers it, else None. A burst takes its
        route slot and money in the pass (`PassSnapshot.launch`), as the policy's does: read once
        per pass, the money let a tenant's bursts in one pass overspend its budget."""
        paid = self._money_ok(job, offer, money, snap.now)
        if paid is None:
            self.money_bound.add(job.index)
            return None
        snap.launch(job.tenant, offer)
        return Decision(
            Action.RUN, offer, (reason,), burst=True, facts=DecisionFacts(cash=paid[0], voucher=paid[1])
        )

    def _cheapest(
        self, job: SimJob, snap: PassSnapshot, money: TenantMoney, ranked: Sequence[Offer]
    ) -> Decision:
        # Without blocks every cloud offer of the job is usable: no keys to compare.
        usable = {o.key for o in self._usable(job, snap, self._lists(job)[1])} if snap.blocked else None
        for o in ranked:
            if o.site in self._onprem_sites:
                if self._free_now(snap, partition_key(o)) >= job.demand:
                    snap.claim(o, job.spec)
                    return Decision(Action.RUN, o, ("cheapest available offer (on-prem)",))
                continue
            if (usable is not None and o.key not in usable) or self._route_refused(o, snap):
                continue
            burst = self._burst_if_paid(job, o, money, "cheapest available offer", snap)
            if burst is not None:
                return burst
        first = next((o for o in ranked if o.site in self._onprem_sites), None)
        if first is not None:
            snap.enqueue(first, job.spec)
        return Decision(Action.WAIT, first, ("nothing available now",))

    # Re-decision triggers -----------------------------------------------------------------

    def candidates(self, job: SimJob, decision: Decision) -> tuple[str, ...]:
        return tuple(sorted(self.facts[job.index].onprem))

    def timer(self, job: SimJob, decision: Decision, now_s: float, backoff_s: float) -> float | None:
        facts = self.facts[job.index]
        if facts.onprem and (self.kind == "onprem-only" or not facts.cloud_by_cost):
            return None  # only freed capacity can start it: capacity events re-decide the heads
        cap = backoff_cap_s(now_s, job.index in self.money_bound, job.epoch)
        return now_s + min(cap, max(backoff_s, self.ttl_s))

    def wants_cloud(self, decision: Decision) -> bool:
        return self.kind != "onprem-only" or decision.offer is None
