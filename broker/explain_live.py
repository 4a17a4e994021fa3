"""Live explain: what the dispatcher would decide for a job spec queued now (`szb explain --server`).

It decides on the dispatcher's current pass snapshot with the planner's own parts (fair share,
projected waits, the one input builder, `broker.burst.decide`), claiming and recording nothing;
where the dispatcher acts on a decision further (fails a waiting job past its deadline), explain
says what the dispatcher will do, from the same rule.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from broker.burst import decide, is_onprem
from broker.burst.inputs import deadline_missed
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision, FairShareNote
from broker.dispatch.own_refusals import excluding_refusals
from broker.dispatch.stop_first import jobs_still_stopping
from broker.fair_queue import FairQueue
from broker.fair_reclaim import bound_for_queue, reclaiming
from broker.fairshare.book import units_of
from broker.fairshare.holds import claimed_meanwhile
from broker.fairshare.order import Standing
from broker.model import Job, JobSpec, TenantId
from broker.planning import Planner
from broker.quota_bar import bar_onprem, quota_reason, refused_at_submit, waiting_for_quota
from broker.store import JobStore
from broker.swap_live import swapped

EXPLAINED = "(this job)"
"""The id the job explained goes by (it has none yet; fair share's preview names it so too)."""


def explain_now(
    planner: Planner, spec: JobSpec, tenant: TenantId, snap: PassSnapshot, store: JobStore,
    job: Job | None = None,
) -> Decision:
    """What the dispatcher would decide for this job if it were queued now, on `snap`; with a
    queued `job` (of that spec and tenant), for it where it stands (its arrival, its place).

    `snap` is the dispatcher's current pass snapshot (live attempts, routes, its claims and
    backlog); the inputs come from the same builder, and nothing is claimed or recorded.
    Fair share is applied as `decide` applies it, from where the job would stand now.
    """
    policy = planner.policy
    fair = planner.fair
    known = (fair.standings.get(job.id) or fair.provisional.get(job.id)) if job is not None else None
    standing = known or fair.preview(policy, spec, tenant, snap.now)
    job_id, since = (job.id, job.created_at) if job is not None else (EXPLAINED, snap.now)
    pending = None  # (a queued job's burst condition held since, as the dispatcher keeps it)
    if job is not None:
        burst = job.id in planner.burst_jobs
        pending = job.created_at if burst else planner.pending_burst.get(job.id, snap.now)
    asked = spec
    limit = policy.document.fair_share.over_share_burst_ratio
    if limit is not None and not standing.in_quota and standing.ratio > limit:
        spec = spec.model_copy(update={"max_wait": timedelta(0)})
    # Waiters the job would stand behind in the fair-share order of the next full pass.
    projected = planner.waits.for_job(policy, spec, snap, store, planner.queueing_sites(), standing.position)
    ahead = planner.waits.launches_ahead(policy, spec, tenant, since, None if job is None else job.id)
    # Capacity fair share holds for a waiting job ahead is taken for a new job, as the
    # dispatcher's pass over new jobs counts it (`FairQueue.held_for`).
    held = planner.fair.book.held_for(planner.fair.holds, policy, snap.now, job_id, tenant)
    barred = planner.fair.barred_at(policy, standing, tenant, spec, snap.now)  # as `Planner.decide`
    held, projected = bar_onprem(barred, held, projected)
    with claimed_meanwhile(snap.claimed, held):
        inputs = planner.inputs_for(
            tenant,
            snap,
            store,
            queued_since=since,
            pending_since=pending,
            projected_wait=projected,
            launches_ahead=ahead,
        )
        if job is not None:  # its own late claim is no reason to yield (as the dispatcher drops it)
            late = {p: {j: c for j, c in cl.items() if j != job.id} for p, cl in inputs.late_claims.items()}
            inputs = excluding_refusals(replace(inputs, late_claims=late), job, store)  # as `Planner.decide`
        decision = decide(spec, tenant, snap.offers, policy, inputs)
    if barred is not None:
        decision = waiting_for_quota(policy, tenant, units_of(spec), decision)
    if projected is not None:
        decision = planner.waits.explained(decision, snap, tenant, store, standing.position, projected)
    decision = _fair_share(planner, spec, tenant, standing, decision, snap)
    decision = _held(fair, job_id, tenant, spec, decision, whole=job is not None and job.id in fair.standings)
    decision = _stopping_first(planner, store, job, decision, snap)
    if decision.action == Action.WAIT and (never := planner.admit(asked, tenant, snap.now)):
        # (as submission refuses it: on the catalog's offers, whatever is blocked or sick now)
        return refused_at_submit(decision, never)
    missed = deadline_missed(asked, snap.now) if decision.action == Action.WAIT else None
    if missed is not None:  # the dispatcher fails a waiting job it can no longer finish in time
        return replace(decision, action=Action.REJECT, reasons=(missed, *decision.reasons))
    return decision


def _stopping_first(
    planner: Planner, store: JobStore, job: Job | None, decision: Decision, snap: PassSnapshot
) -> Decision:
    """A queued job whose preempted attempt has not stopped yet waits for that first, as the
    dispatcher's pass leaves it (`broker.dispatch.stop_first`)."""
    if job is None or decision.action == Action.REJECT:
        return decision
    why = jobs_still_stopping(planner.reclaimer, store, snap.now).get(job.id)
    if why is None:
        return decision
    return replace(decision, action=Action.WAIT, reasons=(why, *decision.reasons))


def _held(
    fair: FairQueue, job_id: str, tenant: str, spec: JobSpec, decision: Decision, *, whole: bool
) -> Decision:
    """The decision naming the hold that keeps it off capacity free now, as the pass names it
    (`whole`: a queued job decided in a pass over the queue's head)."""
    if decision.offer is None:
        return decision
    job = (job_id, tenant, units_of(spec))
    return fair.holds.named(decision, decision.offer.partition, job, fair.ratios, whole_pass=whole)


def _fair_share(
    planner: Planner, spec: JobSpec, tenant: TenantId, standing: Standing, decision: Decision,
    snap: PassSnapshot,
) -> Decision:
    """The decision as fair share leaves it, as `FairQueue.adjust` does in a pass: beyond a quota
    it may not borrow past it waits; it reclaims borrowed work holding its quota; it is held while
    the units it would queue for are booked to an owner's job."""
    policy = planner.policy
    fair = FairShareNote(standing.position, standing.in_quota, round(standing.ratio, 3), standing.text())
    offer = decision.offer
    onprem = offer is not None and is_onprem(policy, offer.site)
    if decision.action == Action.RUN and offer is not None and onprem and not standing.may_run_onprem:
        reasons = (quota_reason(policy, tenant, units_of(spec), offer.partition), standing.text())
        decision = replace(decision, action=Action.WAIT, reasons=reasons, fair_share=fair)
    else:
        decision = replace(decision, reasons=(*decision.reasons, standing.text()), fair_share=fair)
    others = snap.claimed.get(offer.partition, 0) if offer is not None else 0  # (explain claims nothing)
    if decision.action == Action.WAIT or bound_for_queue(decision, spec, others):
        # borrowed work fair share would preempt for it (none here), as the dispatcher decides:
        # a job bound for Slurm's queue behind borrowed work holding its quota waits and reclaims
        taken = planner.fair.reclaim_for(policy, tenant, spec, standing, decision, snap, commit=False)
        if taken.reason:
            decision = replace(reclaiming(decision, taken.reason), reclaim=taken.victims)
    if not onprem:  # a burst may stop patient work instead, as the dispatcher's would (nothing stopped)
        book, reclaimer, may = planner.fair.book, planner.reclaimer, standing.may_run_onprem
        return swapped(
            book, reclaimer, policy, EXPLAINED, tenant, spec, decision, snap, may_run_onprem=may,
            commit=False, ratios=planner.fair.ratios,
        )
    return _kept_off(planner, decision, units_of(spec), snap)


def _kept_off(planner: Planner, decision: Decision, units: int, snap: PassSnapshot) -> Decision:
    """A RUN the dispatcher would hold while units there are booked to an owner's job
    (`Reclaimer.keep_off`), on a copy of the snapshot holding the claim the dispatcher's decision
    would have made: explain claims nothing."""
    offer = decision.offer
    if decision.action != Action.RUN or offer is None:
        return decision
    claimed = dict(snap.claimed)
    claimed[offer.partition] = claimed.get(offer.partition, 0) + units
    kept = planner.reclaimer.keep_off(decision, EXPLAINED, units, replace(snap, claimed=claimed))
    return decision if kept is None else kept
