"""What a burst decision reads besides the job, offers and policy, and the job facts it derives."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.burst.money import TenantMoney
from broker.burst.routes import RouteState
from broker.model import JobSpec, Offer, SiteId
from broker.placement.blocklist import BLOCKED
from broker.placement.health import DRAINED, UNHEALTHY
from broker.policy import Policy

TRANSIENT_RULES = frozenset({BLOCKED, UNHEALTHY, DRAINED})
"""Rejections that may lift by themselves (or when an operator undrains a site): a job rejected
only by these waits, never fails."""


@dataclass(frozen=True)
class BurstInputs:
    """Everything besides the job, offers and policy that the decision depends on."""

    now: datetime
    queued_since: datetime
    money: TenantMoney = field(default_factory=TenantMoney)
    routes: Mapping[SiteId, RouteState] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()
    block_reasons: Mapping[str, str] = field(default_factory=dict)
    unhealthy: Mapping[SiteId, str] = field(default_factory=dict)
    drained: Mapping[SiteId, str] = field(default_factory=dict)
    """Sites an operator drained, with who and why (`PlacementContext.drained_sites`)."""
    no_images: Mapping[SiteId, str] = field(default_factory=dict)
    """Sites that cannot run a container image, with why (`PlacementContext.no_images`)."""
    burst_pending_since: datetime | None = None
    """When the burst condition was first seen true for this job (hysteresis memory)."""
    queueing_sites: frozenset[str] = frozenset()
    """On-prem sites whose backend keeps its own queue (the job can be sent there to pend)."""
    onprem_adjust: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Partition key (`site/partition`) -> (accelerators already claimed, extra wait seconds)
    from decisions made earlier in the same pass; applied to on-prem offers here."""
    onprem_claim_shapes: Mapping[str, Sequence[tuple[int, int]]] = field(default_factory=dict)
    """Partition key -> (units per node, nodes) of the jobs started there earlier in the pass."""
    onprem_capacity: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Partition key -> (free units, expected wait seconds) as the backend reports them now;
    overrides the on-prem offers' own `free` and `expected_wait_s`, so the offer list can stay
    one static catalog (and placement's memo stays warm) while capacity changes."""
    projected_wait: Mapping[str, float] = field(default_factory=dict)
    """Partition key -> this job's projected wait there (`broker.burst.projection`: running
    jobs' expected ends and the queue ahead in dispatch order). Where given, it replaces the
    fluid estimate, and a late job bursts at the last responsible moment (deadline minus the
    route's provisioning p95) instead of after the hysteresis."""
    launches_ahead: Mapping[SiteId, int] = field(default_factory=dict)
    """Cloud site -> bursts already committed to it (waiting for their last responsible moment)
    that are due before this job. The route starts at most `max_provisioning` at once, so each
    full round of them ahead moves this job's last responsible moment one provisioning p95
    earlier: a crowd of jobs due together does not queue behind the route's limit past its deadlines."""
    late_claims: Mapping[str, Mapping[str, tuple[int, float]]] = field(default_factory=dict)
    """Partition key -> job -> (units, premium) of the late jobs waiting there to burst at their
    last responsible moment (`broker.burst.claims`). A job that could start now yields the
    capacity to one that fits it and whose burst would cost more than this job's own."""
    runtime_ratio: float = 1.0
    """The stretch the projected wait model puts on the tenant's estimates (`broker.burst.runtimes`:
    its median actual/estimated runtime times its spread, a high quantile): a spot run's expected
    restarts and completion are judged on the estimate stretched by it (never shrunk), so a tenant
    whose jobs overrun their estimates is not put on spot past the limit."""
    firm_deadline: bool = False
    """The job's max_wait is a firm deadline ("Can't Be Late"): projected late on-prem, it bursts
    at its last responsible moment to the best usable cloud offer, however the premium compares
    with the lateness cost. Set for a tenant below its fair share (fair share owes it the wait)."""

    def nodes_fit(self, offer: Offer, spec: JobSpec) -> bool:
        """Whether the job finds as many nodes as it spans with its share free each (True when the
        backend does not say per node): one node holds all of a one-node job. The jobs started
        earlier in the pass are placed as Slurm's best fit places them, each node of theirs on the
        fullest-used node that holds its share; units claimed otherwise (launches in flight) come
        off the nodes with most free."""
        nodes = max(1, spec.resources.nodes)
        if not offer.free_by_node:
            return True
        free = list(offer.free_by_node)
        left = self.onprem_adjust.get(offer.partition, (0, 0.0))[0]
        for per, count in self.onprem_claim_shapes.get(offer.partition, ()):
            used: set[int] = set()  # (a job's nodes are distinct nodes)
            for _ in range(count):
                fits = [i for i, units in enumerate(free) if units >= per and i not in used]
                if fits:
                    best = min(fits, key=lambda i: free[i])
                    free[best] -= per
                    left -= per
                    used.add(best)
        free.sort(reverse=True)
        for i in range(len(free)):
            taken = min(max(0, left), free[i])
            free[i] -= taken
            left -= taken
        return sum(1 for units in free if units >= demand(spec) // nodes) >= nodes

    def free_units(self, offer: Offer) -> int | None:
        """Free units of the offer's partition now, less those claimed earlier in the pass (None: unknown)."""
        part = offer.partition  # (formatted on each read)
        cap = self.onprem_capacity.get(part)
        free = offer.free if cap is None else cap[0]
        return None if free is None else free - self.onprem_adjust.get(part, (0, 0.0))[0]


_ONPREM: dict[int, tuple[Policy, frozenset[str]]] = {}


def onprem_sites(policy: Policy) -> frozenset[str]:
    """The ids of the policy's on-prem sites (cached per policy object)."""
    hit = _ONPREM.get(id(policy))
    if hit is None or hit[0] is not policy:
        if len(_ONPREM) > 64:
            _ONPREM.clear()
        hit = _ONPREM[id(policy)] = (policy, frozenset(s.id for s in policy.sites if s.partitions))
    return hit[1]


def is_onprem(policy: Policy, site_id: str) -> bool:
    """On-prem sites are the ones described by partitions (HPC style), not cloud catalogs."""
    return site_id in onprem_sites(policy)


def demand(spec: JobSpec) -> int:
    """What a job takes from an offer's `free`: accelerators, or CPU cores when it needs none (× nodes)."""
    return (spec.accelerator_count or math.ceil(spec.resources.cpus)) * spec.resources.nodes


def latest_start(spec: JobSpec) -> datetime | None:
    """The last moment the job can start and still meet its deadline (None: it has none)."""
    return None if spec.deadline is None else spec.deadline - spec.runtime_estimate


def deadline_missed(spec: JobSpec, now: datetime) -> str | None:
    """Why a job that would wait now fails instead: past its latest start its deadline can no
    longer be met (None: it can, or it has none). The dispatcher and explain both say this."""
    latest = latest_start(spec)
    if latest is None or now <= latest:
        return None
    return f"deadline {spec.deadline.isoformat() if spec.deadline else ''} can no longer be met"


def due_at(spec: JobSpec, tenant_id: str, policy: Policy, arrival: datetime) -> datetime:
    """The latest start the dispatch order keys on: arrival + the job's max_wait, or its
    `latest_start` when that comes first (as `decide` bounds its wait)."""
    due, latest = arrival + effective_max_wait(spec, tenant_id, policy), latest_start(spec)
    return due if latest is None else min(due, latest)


def effective_max_wait(spec: JobSpec, tenant_id: str, policy: Policy) -> timedelta:
    """The job's own max_wait, else the policy default for its priority, tenant kind, or overall."""
    if spec.max_wait is not None:
        return spec.max_wait
    mw = policy.burst.max_wait
    if spec.priority in mw.by_priority:
        return mw.by_priority[spec.priority]
    tenant = policy.tenant(tenant_id)
    if tenant is not None and tenant.kind in mw.by_tenant_kind:
        return mw.by_tenant_kind[tenant.kind]
    return mw.default
