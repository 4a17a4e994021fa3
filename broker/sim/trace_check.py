"""A trace checked against the policy it is simulated under: tenants and accelerators it knows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from broker.catalog.accelerators import normalize
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.sim.traces import TraceError, TraceJob
from broker.validation import did_you_mean


def vet_trace(trace: Sequence[TraceJob], policy: Policy, path: Path | str) -> None:
    """TraceError at the first row naming a tenant or an accelerator the policy does not know
    (its jobs would only be refused, which reads as a policy result, not a typo)."""
    tenants = [t.id for t in policy.tenants]
    offered = {normalize(o.accelerator): o.accelerator for o in static_offers(policy) if o.accelerator}
    names = [*policy.accelerators.names(), *offered.values()]
    for tj in trace:
        if tj.tenant is not None and tenants and tj.tenant not in tenants:
            hint = did_you_mean(tj.tenant, tenants) or f" (the policy's tenants: {', '.join(tenants)})"
            raise TraceError(f"{path}:{tj.line}: tenant: {tj.tenant!r} is not a tenant of the policy{hint}")
        for name in tj.accelerators:
            if policy.accelerators.get(name) is None and normalize(name) not in offered:
                hint = did_you_mean(name, names, cutoff=0.5)
                raise TraceError(f"{path}:{tj.line}: accelerator: unknown accelerator {name!r}{hint}")
