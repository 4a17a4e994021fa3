"""A tenant that may not borrow, beyond its guaranteed quota: no idle on-prem unit is its job's.

`FairQueue.barred` gives, per partition, when the tenant's own quota there has room; the
dispatcher's decision (`Planner.decide`) and explain (`explain_now`) both apply it here, so
they wait for the same thing and say so in the same words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from broker.burst import is_onprem
from broker.burst.spot import spot_never
from broker.decision import Action, Decision
from broker.fairshare import resolve_share
from broker.fairshare.book import units_of
from broker.model import JobSpec, Offer
from broker.policy import Policy


def bar_onprem(
    barred: Mapping[str, float] | None,
    held: dict[str, int],
    projected: dict[str, float] | None,
) -> tuple[dict[str, int], dict[str, float] | None]:
    """A barred job's inputs (`FairQueue.barred`): no idle on-prem unit is its, and each
    partition's projected wait is at least the time until its own quota there has room."""
    if barred is None:
        return held, projected
    held = {**held, **dict.fromkeys(barred, 1 << 20)}
    if projected:
        projected = {k: max(w, barred.get(k, 0.0)) for k, w in projected.items()}
    return held, projected


def waiting_for_quota(policy: Policy, tenant: str, units: int, decision: Decision) -> Decision:
    """A barred job that waits on-prem waits for its own quota: its first reason says so (the
    dispatcher's event, `szb get` and explain alike). `units`: what the job takes of a quota."""
    offer = decision.offer
    if decision.action != Action.WAIT or offer is None or not is_onprem(policy, offer.site):
        return decision
    reasons = decision.reasons
    barred = _no_borrow(policy, tenant, units, offer.partition)
    first = f"{barred}; {reasons[0]}" if reasons else f"{barred}; waiting for its quota"
    return replace(decision, reasons=(first, *reasons[1:]))


def never_admitted(policy: Policy, tenant: str, units: int, offers: Iterable[Offer]) -> list[str]:
    """Why no quota can ever admit the job (empty when one may): its tenant may not borrow, and
    every offer placement allows is on-prem where the tenant's quota is below what the job needs
    (no cloud route)."""
    share = resolve_share(policy, tenant)
    if share.may_borrow:
        return []
    partitions = set()
    for offer in offers:
        if not is_onprem(policy, offer.site) or share.quota.get(offer.partition, 0) >= units:
            return []
        partitions.add(offer.partition)
    return [f"{_no_borrow(policy, tenant, units, p)}, so it could never start" for p in sorted(partitions)]


def _no_borrow(policy: Policy, tenant: str, units: int, partition: str) -> str:
    quota = resolve_share(policy, tenant).quota.get(partition, 0)
    if units > quota:  # its quota never has room: "used" would send the tenant looking for its jobs
        return (
            f"tenant {tenant} may not borrow idle on-prem capacity and its guaranteed quota on "
            f"{partition} is {quota}, less than the {units} the job needs"
        )
    return f"tenant {tenant} has used its guaranteed quota and may not borrow idle on-prem capacity"


def quota_reason(policy: Policy, tenant: str, units: int, partition: str) -> str:
    """Why a job of a tenant that may not borrow waits while on-prem capacity is idle."""
    return f"{_no_borrow(policy, tenant, units, partition)}; waiting for its quota"


def never_runs(policy: Policy, tenant: str, spec: JobSpec, allowed: Sequence[Offer]) -> list[str]:
    """Why a job the placement allows `allowed` offers can never run (empty when it can): no quota
    ever admits it, or only spot offers over the restart limit could run it. Submission refuses
    such a job; explain, live and offline, rejects it the same way (`refused_at_submit`)."""
    return never_admitted(policy, tenant, units_of(spec), allowed) or spot_never(spec, allowed, policy)


def as_submitted(decision: Decision, spec: JobSpec, policy: Policy, tenant: str) -> Decision:
    """`decision`, or a REJECT where submission would refuse the job (`never_runs`) on the offers
    its placement allows, nothing blocked: offline explain (the simulator asks `never_runs` itself,
    on its catalog, as the broker's submission does)."""
    if decision.action == Action.REJECT or decision.explanation is None:
        return decision
    allowed = [s.offer for s in decision.explanation.unranked]
    never = never_runs(policy, tenant, spec, allowed) if allowed else []
    return refused_at_submit(decision, never) if never else decision


def refused_at_submit(decision: Decision, reasons: Sequence[str]) -> Decision:
    """`decision` as explain says it for a job submission refuses for `reasons`."""
    return replace(decision, action=Action.REJECT, burst=False,
                   reasons=(*reasons, "submitted, it is refused with FAILED_PRECONDITION"))
