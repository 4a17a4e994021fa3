"""Why a simulated policy refused jobs: the rules that rejected each one's offers, counted.

A job is refused when every offer is rejected. It is named by the rules that rejected the offers
its hardware request fits (an export rule that rejects a 1-GPU instance is no reason a 64-GPU
job was refused), or by its hardware misfits where it fits none (`broker.placement.refusal`).
`szb explain` gives one job's every reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.model import JobSpec, Offer, TenantId
from broker.placement import Explanation, PlacementContext, place
from broker.placement.refusal import refusal_rules as refusal_rules_of
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.quota_bar import never_runs
from broker.sim.jobs import SimJob
from broker.sim.metrics import RunResult


@dataclass(frozen=True)
class Judged:
    """A job placed on its static offers at submit under a policy: whether submission admits it,
    and why not (one placement serves both questions)."""

    spec: JobSpec
    tenant: TenantId
    policy: Policy
    offers: list[Offer]
    ctx: PlacementContext
    explanation: Explanation
    never: list[str]
    """Why no allowed offer can ever run it (`never_runs`: the live admission's reasons)."""

    @property
    def admitted(self) -> bool:
        """Submission takes it: some offer is allowed and one of them can run it."""
        return bool(self.explanation.unranked) and not self.never

    def rules(self) -> list[tuple[str, int, str]] | str:
        """(rule, offers, message) of what refuses it, the commonest first (`broker.placement.refusal`);
        no rule: why not, as text."""
        expl = self.explanation
        rules = refusal_rules_of(expl, self.spec, self.tenant, self.offers, self.policy, self.ctx)
        if not rules:
            return "no offer at all" if not expl.offers else "refused by the burst decision"
        return rules

    def reason(self) -> str:
        """`rule: message` of what refuses it, as a submission is answered: why no allowed offer can
        ever run it (quota, spot restarts) first, then the commonest rule rejecting the offers it fits,
        or its hardware misfit where it fits none."""
        if self.never:
            return self.never[0]
        rules = self.rules()
        if isinstance(rules, str):
            return rules
        rule, _, message = rules[0]
        return f"{rule}: {message}"


def judge(spec: JobSpec, tenant: TenantId, at: datetime, policy: Policy) -> Judged:
    """The job submitted at `at` under `policy`, placed once on its static offers."""
    offers, ctx = static_offers(policy), PlacementContext(now=at)
    expl = place(spec, tenant, offers, policy, ctx)
    allowed = [s.offer for s in expl.unranked]
    never = never_runs(policy, tenant, spec, allowed) if allowed else []
    return Judged(spec, tenant, policy, offers, ctx, expl, never)


def refusal_rules(job: SimJob, policy: Policy) -> str:
    """`rule + rule ...`: the set of rules that refuse the job under `policy`, by name (the
    commonest-first order varies with the job's shape: one set was counted under two orders)."""
    rules = judge(job.spec, job.tenant, job.created_at, policy).rules()
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
