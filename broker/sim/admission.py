"""A replay's submissions under the live quotas: `max_queued_jobs` and the submit rate.

A tenant's arrivals at one instant are one `SubmitJobs` call (a call's jobs are stored with one
time): the call is asked of `broker.quota.Quotas.admit`, the live submit's own check, all or
nothing, with the tenant's unfinished jobs (arrived, taken, not ended) and the simulated clock
for the rate's token bucket; a call over a limit is refused with the live RESOURCE_EXHAUSTED
message. (Asked job by job, a call of 10 under `max_queued_jobs: 5` was half taken, where the
live broker refuses all 10.)
The other limits (spec sizes, watch streams, reads) are not modelled: `not_modelled` names them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from broker.model import Job, TenantId
from broker.policy import Policy
from broker.policy.schema_parts import Limits
from broker.quota import QuotaExceededError, Quotas, tenant_limits
from broker.sim.jobs import SimJob
from broker.sim.metrics import GIVE_UP_INTERRUPTIONS, JobRecord
from broker.sim.state import SimState

MODELLED = ("max_queued_jobs", "submit_rate", "submit_burst")
"""The `limits` a replay applies at each submission."""


def not_modelled(current: Policy, candidate: Policy) -> list[str]:
    """`limits.NAME` of each limit a replay does not apply that differs between the policies for
    some tenant: the replay cannot show what changing it does."""
    tenants = {t.id for t in (*current.document.tenants, *candidate.document.tenants)}
    names = (n for n in Limits.model_fields if n not in MODELLED)
    pairs = [(tenant_limits(current, t), tenant_limits(candidate, t)) for t in sorted(tenants)]
    return [f"limits.{n}" for n in names if any(getattr(a, n) != getattr(b, n) for a, b in pairs)]


def _ended(rec: JobRecord) -> bool:
    """No longer counted by `max_queued_jobs`: finished, refused, failed or given up."""
    gone = rec.rejected or rec.failed or rec.interruptions >= GIVE_UP_INTERRUPTIONS
    return gone or not math.isnan(rec.end_s)


def calls_refused(jobs: Sequence[Job], refuses: Callable[[Job], str | None]) -> dict[int, str]:
    """Job index -> why, for the placeable jobs of a call (a tenant's submissions stored at one
    time) that `refuses` refuses another job of: the live submit refuses a call whole."""
    calls: dict[tuple[str, datetime], list[int]] = {}
    for i, job in enumerate(jobs):
        calls.setdefault((job.tenant, job.created_at), []).append(i)
    out: dict[int, str] = {}
    for call in calls.values():
        if len(call) < 2:
            continue  # (a job refused alone is refused by the run's own decision)
        why = {i: refuses(jobs[i]) for i in call}
        first = next((i for i in call if why[i] is not None), None)
        if first is not None:
            said = f"refused with its call: job {jobs[first].spec.name!r}: {why[first]}"
            out.update({i: said for i in call if why[i] is None})
    return out


class Admission:
    """The live submission quotas on a run's arrivals (`refused`: job index -> the live message).
    `with_calls`: the jobs refused with their call (`calls_refused`), refused on arrival."""

    def __init__(self, policy: Policy, with_calls: Mapping[int, str] | None = None) -> None:
        self.now = 0.0
        self.quotas = Quotas(lambda t: tenant_limits(policy, t), monotonic=lambda: self.now)
        self.unfinished: dict[str, list[JobRecord]] = {}
        self.refused: dict[int, str] = {}
        self.with_calls = with_calls or {}

    def admitted(
        self, batch: Sequence[int], jobs: Sequence[SimJob], state: Sequence[SimState], now: float
    ) -> list[int]:
        """The arrivals the quotas take, in `batch` order; the others are rejected, as the submit
        refuses them (each tenant's arrivals together, as one call)."""
        self.now = now
        calls: dict[str, list[int]] = {}
        for j in batch:
            calls.setdefault(jobs[j].tenant, []).append(j)
        taken: set[int] = set()
        for tenant, call in calls.items():
            mine = self.unfinished[tenant] = [r for r in self.unfinished.get(tenant, []) if not _ended(r)]
            try:  # (live, the quotas see the whole call before the policy refuses any of it)
                self.quotas.admit(TenantId(tenant), len(call), len(mine))
            except QuotaExceededError as exc:
                for j in call:
                    self.refused[j], state[j].rec.rejected = str(exc), True
                continue
            for j in call:
                if j in self.with_calls:
                    self.refused[j], state[j].rec.rejected = self.with_calls[j], True
                else:  # (the call's cause is refused by the run's own decision)
                    mine.append(state[j].rec)
                    taken.add(j)
        return [j for j in batch if j in taken]
