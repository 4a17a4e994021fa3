"""A replay's submissions under the live quotas: `max_queued_jobs` and the submit rate.

Each arrival is asked of `broker.quota.Quotas.admit`, the live submit's own check, with the
tenant's unfinished jobs (arrived, taken, not ended) and the simulated clock for the rate's
token bucket; a submission over a limit is refused with the live RESOURCE_EXHAUSTED message.
The other limits (spec sizes, watch streams, reads) are not modelled: `not_modelled` names them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from broker.model import TenantId
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


class Admission:
    """The live submission quotas on a run's arrivals (`refused`: job index -> the live message)."""

    def __init__(self, policy: Policy) -> None:
        self.now = 0.0
        self.quotas = Quotas(lambda t: tenant_limits(policy, t), monotonic=lambda: self.now)
        self.unfinished: dict[str, list[JobRecord]] = {}
        self.refused: dict[int, str] = {}

    def admitted(
        self, batch: Sequence[int], jobs: Sequence[SimJob], state: Sequence[SimState], now: float
    ) -> list[int]:
        """The arrivals the quotas take; the others are rejected, as the submit refuses them."""
        self.now, out = now, []
        for j in batch:
            tenant, rec = jobs[j].tenant, state[j].rec
            mine = self.unfinished[tenant] = [r for r in self.unfinished.get(tenant, []) if not _ended(r)]
            try:
                self.quotas.admit(TenantId(tenant), 1, len(mine))
            except QuotaExceededError as exc:
                self.refused[j], rec.rejected = str(exc), True
                continue
            mine.append(rec)
            out.append(j)
        return out
