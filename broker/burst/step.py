"""One queued job's decision within a dispatch pass: the step the live planner and the simulator share.

`build_inputs` is the one builder of a job's `BurstInputs` from a pass snapshot (money,
routes, blocks, health, live claims and the pass's backlog). `decide_in_pass` calls
`decide` with them and records an on-prem RUN (claim), WAIT (backlog) or a burst (route
slot, money read again) in the snapshot so the next job of the pass sees it. The live
dispatcher, live explain (which decides without recording) and the simulator all build their
inputs here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from broker.burst.claims import Claim
from broker.burst.decision import decide
from broker.burst.inputs import BurstInputs, is_onprem
from broker.burst.money import TenantMoney
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision
from broker.model import JobSpec, SiteId, TenantId
from broker.policy import Policy


def build_inputs(
    snap: PassSnapshot,
    *,
    queued_since: datetime,
    money: TenantMoney,
    pending_since: datetime | None,
    queueing_sites: frozenset[str],
    unhealthy: Mapping[SiteId, str] | None = None,
    projected_wait: Mapping[str, float] | None = None,
    launches_ahead: Mapping[SiteId, int] | None = None,
    firm_deadline: bool = False,
    late_claims: Mapping[str, Mapping[str, Claim]] | None = None,
    runtime_ratio: float = 1.0,
) -> BurstInputs:
    """The decision inputs of one queued job, as of the pass snapshot."""
    return BurstInputs(
        now=snap.now,
        queued_since=queued_since,
        money=money,
        routes=snap.routes,
        blocked=snap.blocked,
        block_reasons=snap.block_reasons,
        unhealthy=snap.unhealthy if unhealthy is None else unhealthy,
        drained=snap.drained,
        no_images=snap.no_images,
        burst_pending_since=pending_since,
        queueing_sites=queueing_sites,
        onprem_adjust=snap.adjustments(),
        onprem_claim_shapes=snap.claim_shapes,
        onprem_capacity=snap.capacity,
        projected_wait=projected_wait or {},
        launches_ahead=launches_ahead or {},
        firm_deadline=firm_deadline,
        late_claims=late_claims or {},
        runtime_ratio=runtime_ratio,
    )


def decide_in_pass(
    spec: JobSpec, tenant: TenantId, snap: PassSnapshot, policy: Policy, inputs: BurstInputs
) -> Decision:
    """Decide one job against the pass view, then record it in `snap` for the pass's next job:
    an on-prem RUN claims capacity, a WAIT joins the backlog, a burst takes a route slot and money.

    `inputs` come from `build_inputs` on the same snapshot.
    """
    decision = decide(spec, tenant, snap.offers, policy, inputs)
    if decision.offer is None:
        return decision
    if is_onprem(policy, decision.offer.site):
        if decision.action == Action.RUN:
            snap.claim(decision.offer, spec)
        elif decision.action == Action.WAIT:
            snap.enqueue(decision.offer, spec)
    elif decision.action == Action.RUN:
        snap.launch(tenant, decision.offer)
    return decision
