"""Live `burst.preempt_patient`: a job about to burst stops a patient on-prem job instead.

`FairQueue.adjust` hands each decision it finishes to `swapped`. A burst asks
`broker.burst.swap.swap_for` whether a patient job running on-prem (the fair-share book's live
holdings, less the work already stopping) may be stopped for it. When one may, the job does not
burst: it waits, the victim's units are booked to it as reclaim books them (`Reclaimer.book`;
`Reclaimer.keep_off` keeps every other job off them), and the dispatcher preempts the victim with
reclaim's grace and requeues it (`Decision.reclaim`, `broker.dispatch.preempt`). The job starts
on those units once they read free. Reclaim's waste budget is not charged: `max_lost_share`
bounds a swap. Explain asks the same with `commit` False: nothing is booked or stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from broker.burst.snapshot import PassSnapshot
from broker.burst.swap import Preemptible, swap_for
from broker.decision import Action, Decision, ReclaimVictim
from broker.fair_reclaim import Reclaimer
from broker.fairshare import resolve_share
from broker.fairshare.book import FairShareBook, Holding
from broker.fairshare.reclaim import Running, holding_quota
from broker.fairshare.stopping import Stopping
from broker.model import JobSpec, Offer, job_named_for
from broker.policy import Policy


def swapped(
    book: FairShareBook,
    reclaimer: Reclaimer,
    policy: Policy,
    job_id: str,
    tenant: str,
    spec: JobSpec,
    decision: Decision,
    snap: PassSnapshot,
    *,
    may_run_onprem: bool = True,
    commit: bool = True,
    ratios: Mapping[str, float] | None = None,
) -> Decision:
    """The decision of a job about to burst when patient work is stopped for it instead (or is
    still stopping for it): it waits, saying so first. Any other decision stands, as does the
    burst of a job fair share keeps off idle on-prem units (`may_run_onprem` False: it may not
    borrow beyond its quota), since the units freed would not be its to take. `ratios`: the
    tenants' fair-share ratios of the queue's order (no work of a tenant fair share owes, by
    `burst.firm_deadline_share_gap`, is stopped)."""
    if not policy.burst.preempt_patient.enabled or decision.action != Action.RUN or not decision.burst:
        return decision
    if not may_run_onprem:
        return decision
    mine = reclaimer.booked_for(job_id, snap.now)
    if mine:  # stopped for it already: it waits for those units, and stops nothing more
        _give_back(snap, tenant, decision, commit)
        why = _still_stopping(policy, mine, reclaimer.stop_time(snap.now))
        return _waiting(decision, _home(snap, mine[0].partition), why)
    # Work pending in its backend's queue holds no unit: stopping it would free nothing (unless
    # the backend already runs it, and no poll has said so yet).
    stopping = reclaimer.stopping_ids()
    live = {aid: h for aid, h in book.live.items()
            if aid not in stopping and (not h.queued or aid in snap.started)}
    guaranteed = _in_quota(policy, live)
    running = [_candidate(aid, h, snap.now, aid in guaranteed) for aid, h in live.items()]
    swap = swap_for(decision, spec, policy, running, tenant, ratios)
    if swap is None:
        return decision
    victim = swap.victim
    currency = policy.document.currency
    owner = book.live[victim.key].tenant
    why = (
        f"preempted: stopped for {job_named_for(job_id, tenant, owner)}, which would otherwise have burst to "
        f"{decision.offer.site if decision.offer else 'the cloud'} at {swap.premium:.2f} {currency} more "
        f"than running on {victim.partition} (burst.preempt_patient); requeued with its wait ahead"
    )
    if commit:
        reclaimer.book(policy, book, victim.key, victim.partition, victim.units, job_id, snap.now)
    _give_back(snap, tenant, decision, commit)
    waiting = _waiting(decision, swap.offer, swap.reason(currency))
    return replace(waiting, reclaim=(ReclaimVictim(victim.key, owner, victim.units, why),))


def _give_back(snap: PassSnapshot, tenant: str, decision: Decision, commit: bool) -> None:
    """The pass recorded the burst's launch (`decide_in_pass`); it waits instead: free that route
    slot for the pass's next jobs. Explain (`commit` False) recorded none."""
    if commit and decision.offer is not None:
        snap.unlaunch(tenant, decision.offer)


def _candidate(attempt_id: str, h: Holding, now: datetime, in_quota: bool) -> Preemptible:
    ran = max(0.0, (now - h.start).total_seconds())
    slack = None if h.due is None else (h.due - now).total_seconds()
    return Preemptible(
        attempt_id, h.partition, h.units, ran, h.checkpoint_s, h.max_wait_s, h.restarts, h.gang,
        h.tenant, in_quota, slack,
    )


def _in_quota(policy: Policy, live: Mapping[str, Holding]) -> set[str]:
    """The attempts running within their tenant's guaranteed quota on their partition, wholly or
    in part (the earliest started count first, as reclaim counts them): only that tenant's jobs
    stop them."""
    out: set[str] = set()
    for part in {h.partition for h in live.values()}:
        mine = [(a, h) for a, h in live.items() if h.partition == part]
        here = [Running(a, h.tenant, h.units, h.start, h.checkpoint_s) for a, h in mine]
        quotas = {t: resolve_share(policy, t).quota.get(part, 0) for t in {r.tenant for r in here}}
        out |= holding_quota(here, quotas)
    return out


def _home(snap: PassSnapshot, partition: str) -> Offer | None:
    """The cheapest on-prem offer of `partition` the pass reads (None: it reads none)."""
    found = [o for o in snap.offers if o.partition == partition]
    return min(found, key=lambda o: (o.price_per_hour, o.key)) if found else None


def _waiting(decision: Decision, home: Offer | None, reason: str) -> Decision:
    """The burst turned into a wait for the units on `home`, saying `reason` alone: the burst's
    own reasons no longer hold."""
    offer = home or decision.offer
    return replace(decision, action=Action.WAIT, offer=offer, burst=False, reasons=(reason,))


def _still_stopping(policy: Policy, mine: Sequence[Stopping], t: float) -> str:
    # (a swap's or fair-share reclaim's: a booking does not say which, so neither is named)
    grace = policy.document.fair_share.reclaim.grace.total_seconds()
    since = t - min(s.since for s in mine)  # (`t`: `Reclaimer.stop_time`)
    return (
        f"work preempted for it on {mine[0].partition} is stopping ({sum(s.units for s in mine)} unit(s), "
        f"{since:.0f} s since the preemption, {grace:.0f} s grace): it starts when they stop, "
        f"rather than burst (burst.preempt_patient)"
    )
