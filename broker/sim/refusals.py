"""Why a simulated policy refused jobs: the rules that rejected each one's offers, counted.

A job is refused when every offer is rejected; which rule rejects an offer first depends on the
filter order (an export rule can reject a 1-GPU instance a 64-GPU job would not fit anyway), so
a refusal is named by all the rules that rejected its offers, blocking rules first and hardware
misfits last, as `rejection_counts` orders them. `szb explain` gives one job's every reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from broker.placement import PlacementContext, place, rejection_counts
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.sim.jobs import SimJob
from broker.sim.metrics import RunResult


def refusal_rules(job: SimJob, policy: Policy) -> str:
    """`rule + rule ...`: every rule that rejected one of the job's offers under `policy`."""
    expl = place(job.spec, job.tenant, static_offers(policy), policy, PlacementContext(now=job.created_at))
    rules = [rule for rule, _, _ in rejection_counts(expl)]
    if not rules:
        return "no offer at all" if not expl.offers else "refused by the burst decision"
    return " + ".join(rules)


def refusal_counts(jobs: Sequence[SimJob], run: RunResult, policy: Policy) -> dict[str, int]:
    """How many jobs the run refused for each set of rules, the commonest first."""
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
