"""How long before its deadline a late job's burst must start (the last responsible moment). Pure."""

from __future__ import annotations

from broker.burst.inputs import BurstInputs
from broker.burst.spot import provisioning_p95_h
from broker.model import SiteId
from broker.policy import Policy


def launch_lead_s(policy: Policy, inputs: BurstInputs, site: str) -> float:
    """How long before the deadline a burst to `site` must start: its provisioning p95, one more
    for each full round of `max_provisioning` launches already committed there ahead of this job."""
    lead = provisioning_p95_h(policy, site, inputs.routes) * 3600
    limits = policy.burst.sites.get(site)
    ahead = inputs.launches_ahead.get(SiteId(site), 0)
    if limits is not None and limits.max_provisioning > 0 and ahead:
        lead *= 1 + ahead // limits.max_provisioning
    return lead


_LEADS: dict[int, tuple[Policy, float]] = {}


def safety_lead_s(policy: Policy, inputs: BurstInputs | None = None) -> float:
    """The longest provisioning p95 of any cloud route (the policy's, or as observed when longer):
    past it, a burst may come too late."""
    hit = _LEADS.get(id(policy))
    if hit is None or hit[0] is not policy:
        if len(_LEADS) > 64:
            _LEADS.clear()
        leads = (provisioning_p95_h(policy, s.id) * 3600 for s in policy.sites if not s.partitions)
        hit = _LEADS[id(policy)] = (policy, max(leads, default=0.0))
    if inputs is None or not inputs.routes:
        return hit[1]
    observed = (r.provisioning_p95_s for r in inputs.routes.values() if r.provisioning_p95_s is not None)
    return max(hit[1], max(observed, default=0.0))
