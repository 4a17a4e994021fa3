"""The policy under test as a simulator strategy: the live decision step, nothing else.

`PolicyStrategy.decide` is `broker.burst.step.decide_in_pass`, the function
`broker.planning.Planner.decide` calls; the rest only reads the decision's numbers to know
when the answer could change (its timers).
"""

from __future__ import annotations

from datetime import datetime

from broker.burst import TenantMoney, is_onprem
from broker.burst.step import build_inputs, decide_in_pass
from broker.decision import Decision
from broker.policy import Policy
from broker.sim.jobs import EPOCH, SimJob
from broker.snapshot import PassSnapshot, partition_key

MIN_GAP_S = 60.0
"""Shortest timer: re-deciding more often than this cannot change much."""
MAX_BACKOFF_S = 7200.0


class PolicyStrategy:
    """The broker's own run / wait / burst decision."""

    name = "policy"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.hysteresis_s = policy.burst.hysteresis.total_seconds()

    def decide(
        self, job: SimJob, snap: PassSnapshot, money: TenantMoney, pending: datetime | None
    ) -> Decision:
        inputs = build_inputs(
            snap, queued_since=job.created_at, money=money, pending_since=pending, queueing_sites=frozenset()
        )
        return decide_in_pass(job.spec, job.tenant, snap, self.policy, inputs)

    def candidates(self, job: SimJob, decision: Decision) -> tuple[str, ...]:
        expl = decision.explanation
        if expl is None:
            return ()
        keys = {partition_key(s.offer) for s in expl.unranked if is_onprem(self.policy, s.offer.site)}
        return tuple(sorted(keys))

    def timer(self, job: SimJob, decision: Decision, now_s: float, backoff_s: float) -> float | None:
        data = decision.data
        since = data.get("burst_pending_since")
        if since:
            return (datetime.fromisoformat(since) - EPOCH).total_seconds() + self.hysteresis_s + 1.0
        wait, remaining = data.get("onprem_expected_wait_s"), data.get("remaining_wait_s", 0)
        if wait is not None and wait <= remaining:
            return now_s + max(MIN_GAP_S, float(remaining) - float(wait) + 1.0)
        return now_s + min(
            MAX_BACKOFF_S, max(backoff_s, self.policy.burst.blocklist_ttl.capacity.total_seconds())
        )

    def wants_cloud(self, decision: Decision) -> bool:
        """Held back only by the cloud side: it would burst, but no cloud offer is usable now."""
        data = decision.data
        if data.get("burst_pending_since") or "cloud_offer" in data:
            return False
        wait = data.get("onprem_expected_wait_s")
        return wait is None or wait > data.get("remaining_wait_s", 0)
