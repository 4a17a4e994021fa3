"""Why a simulated policy refused jobs: the rules that rejected each one's offers, counted.

A job is refused when every offer is rejected. It is named by the rules that rejected the offers
its hardware request fits (an export rule that rejects a 1-GPU instance is no reason a 64-GPU
job was refused), or by its hardware misfits where it fits none (`broker.placement.refusal`).
`szb explain` gives one job's every reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from broker.model import JobSpec, TenantId
from broker.placement import PlacementContext, place
from broker.placement.refusal import refusal_rules as refusal_rules_of
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.quota_bar import never_runs
from broker.sim.jobs import SimJob
from broker.sim.metrics import RunResult


def refused_by(
    spec: JobSpec, tenant: TenantId, at: datetime, policy: Policy
) -> list[tuple[str, int, str]] | str:
    """(rule, offers, message) of what refuses a job submitted at `at` under `policy`, placed on its
    static offers, the commonest first (`broker.placement.refusal`); no rule: why not, as text."""
    offers, ctx = static_offers(policy), PlacementContext(now=at)
    expl = place(spec, tenant, offers, policy, ctx)
    rules = refusal_rules_of(expl, spec, tenant, offers, policy, ctx)
    if not rules:
        return "no offer at all" if not expl.offers else "refused by the burst decision"
    return rules


def never_submitted(spec: JobSpec, tenant: TenantId, at: datetime, policy: Policy) -> list[str]:
    """Why submission refuses a job its placement allows offers (`never_runs`, the live admission's
    reasons: no quota ever admits it, or only spot over the restart limit could run it)."""
    expl = place(spec, tenant, static_offers(policy), policy, PlacementContext(now=at))
    allowed = [s.offer for s in expl.unranked]
    return never_runs(policy, tenant, spec, allowed) if allowed else []


def refusal_rules(job: SimJob, policy: Policy) -> str:
    """`rule + rule ...`: the set of rules that refuse the job under `policy`, by name (the
    commonest-first order varies with the job's shape: one set was counted under two orders)."""
    rules = refused_by(job.spec, job.tenant, job.created_at, policy)
    return rules if isinstance(rules, str) else " + ".join(sorted({rule for rule, _, _ in rules}))


def refusal_counts(jobs: Sequence[SimJob], run: RunResult, policy: Policy) -> dict[str, int]:
    """How many jobs the run refused for each set of rules, the commonest set first."""
    counts: Counter[str] = Counter()
    # One placement per (tenant, shape, runtime): a trace refuses few shapes, many times each.
    known: dict[tuple[str, int, float], str] = {}
    for job, rec in zip(jobs, run.records, strict=True):
        if not rec.rejected:
            continue
        key = (str(job.tenant), id(job.shape), job.spec.runtime_estimate.total_seconds())
        reason = known.get(key) if job.shape is not None else None
        if reason is None:
            reason = known[key] = refusal_rules(job, policy)
        counts[reason] += 1
    return dict(counts.most_common())
