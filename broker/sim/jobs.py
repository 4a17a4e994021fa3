"""Trace jobs -> simulated jobs (a validated `JobSpec` each) and their static placement facts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.burst import demand, effective_max_wait
from broker.burst.decision import onprem_sites
from broker.burst.money import BEIJING
from broker.burst.snapshot import partition_key
from broker.burst.spot import offer_outlook, spot_refusal
from broker.model import (
    AcceleratorRequest,
    Checkpoint,
    JobSpec,
    Offer,
    Priority,
    Residency,
    Resources,
    SpotMode,
    TenantId,
)
from broker.placement import PlacementContext, ScoredOffer, place, prepare_offers
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob

EPOCH = datetime(2026, 3, 1, tzinfo=BEIJING)
"""Simulated time 0 (the start of a budget month)."""
MAX_RUNTIME_S = 90 * 86400.0
"""The longest runtime estimate a JobSpec accepts."""


@dataclass(frozen=True, slots=True)
class SimJob:
    index: int
    id: str
    tenant: TenantId
    spec: JobSpec
    arrival_s: float
    runtime_s: float
    demand: int
    max_wait_s: float

    @property
    def created_at(self) -> datetime:
        return EPOCH + timedelta(seconds=self.arrival_s)


def build_jobs(trace: Sequence[TraceJob], policy: Policy, scenario: Scenario) -> list[SimJob]:
    """Compress time by `scenario.time_scale`, draw tenants (seeded), build and validate specs."""
    rng = random.Random(f"{scenario.seed}:tenants")
    known = [t.id for t in policy.tenants] or ["default"]
    weights = {t: w for t, w in scenario.tenants.items() if w > 0} or dict.fromkeys(known, 1.0)
    names, cum = list(weights), []
    total = 0.0
    for n in names:
        total += weights[n]
        cum.append(total)
    t0 = trace[0].submit_s if trace else 0.0
    jobs: list[SimJob] = []
    for i, tj in enumerate(trace):
        tenant = tj.tenant or names[min(len(names) - 1, _bisect(cum, rng.random() * total))]
        runtime = min(tj.runtime_s, MAX_RUNTIME_S)
        accel = tj.accelerators if scenario.gpu_spec == "keep" else ()
        spec = JobSpec(
            name=f"j-{i}",
            command=("sim",),
            runtime_estimate=timedelta(seconds=runtime),
            resources=Resources(
                accelerators=AcceleratorRequest(count=tj.count, any_of=accel),
                cpus=tj.cpus,
                memory_gb=tj.memory_gb,
            ),
            max_wait=None if tj.max_wait_s is None else timedelta(seconds=tj.max_wait_s),
            priority=Priority(tj.priority),
            data_residency=Residency(tj.residency),
            spot=SpotMode.NEVER
            if scenario.no_spot_over_s is not None and runtime > scenario.no_spot_over_s
            else SpotMode.ALLOWED,
            checkpoint=None
            if scenario.checkpoint_interval_s is None or runtime <= scenario.checkpoint_interval_s
            else Checkpoint(interval=timedelta(seconds=scenario.checkpoint_interval_s)),
        )
        arrival = (tj.submit_s - t0) / scenario.time_scale
        mw = effective_max_wait(spec, tenant, policy).total_seconds()
        jobs.append(SimJob(i, f"j-{i}", TenantId(tenant), spec, arrival, runtime, demand(spec), mw))
    return jobs


def _bisect(cum: list[float], x: float) -> int:
    for i, c in enumerate(cum):
        if x < c:
            return i
    return len(cum) - 1


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What static placement (no capacity, no blocks) says about one job."""

    allowed: tuple[ScoredOffer, ...]
    """Allowed offers (spot ones over the restart limit left out), in no particular order."""
    onprem: dict[str, float]
    """Partition key -> cost of the cheapest allowed on-prem offer there (price x runtime)."""
    cloud_cost: float | None
    """Expected cost of the cheapest allowed cloud offer (spot: with the billed hours its
    interruptions are expected to take, `broker.burst.spot`), None if there is none."""
    cost: dict[str, float]
    """Offer key -> expected cost of each allowed offer (the same pricing)."""
    by_cost: tuple[ScoredOffer, ...] = ()
    """`allowed` by expected cost, then site, then offer key."""


def job_facts(
    job: SimJob,
    policy: Policy,
    offers: Sequence[Offer],
    keys: dict[int, tuple[str, float, str | None]] | None = None,
) -> JobFacts:
    """Run `place()` once on the static offers and keep what the baselines and the bound need.

    `keys` caches per offer object (id): its key, price per hour in the policy currency, and
    its partition key when on-prem (shared across jobs by `all_facts`)."""
    expl = place(job.spec, job.tenant, offers, policy, PlacementContext(now=job.created_at))
    runtime_h = job.runtime_s / 3600
    nodes = job.spec.resources.nodes
    onprem: dict[str, float] = {}
    cloud: float | None = None
    costs: dict[str, float] = {}
    kept: list[ScoredOffer] = []
    order: list[tuple[float, str, str, ScoredOffer]] = []
    keys = {} if keys is None else keys
    spot_h: dict[str, float | None] = {}  # site -> expected billed hours on spot (None: refused)
    for s in expl.unranked:
        o = s.offer
        hours = runtime_h
        if o.spot:
            if o.site not in spot_h:
                ok = spot_refusal(job.spec, o, policy, slack_h=None) is None
                spot_h[o.site] = offer_outlook(job.spec, o, policy, runtime_h).billed_h if ok else None
            got = spot_h[o.site]
            if got is None:
                continue
            hours = got
        known = keys.get(id(o))
        if known is None:
            known = keys[id(o)] = _offer_facts(o, policy)
        key, hourly, part = known
        cost = hourly * hours * nodes  # = estimate_cost(job.spec, o, policy, hours)
        costs[key] = cost
        kept.append(s)
        order.append((cost, o.site, key, s))
        if part is not None:
            onprem[part] = min(cost, onprem.get(part, cost))
        elif cloud is None or cost < cloud:
            cloud = cost
    order.sort(key=lambda c: c[:3])
    return JobFacts(tuple(kept), onprem, cloud, costs, tuple(c[3] for c in order))


def _offer_facts(o: Offer, policy: Policy) -> tuple[str, float, str | None]:
    hourly = o.price_per_hour * (policy.rate(o.currency or policy.currency) or 0.0)
    return o.key, hourly, partition_key(o) if o.site in onprem_sites(policy) else None


def all_facts(jobs: Sequence[SimJob], policy: Policy) -> list[JobFacts]:
    offers = prepare_offers(static_offers(policy, read_at=EPOCH), policy)
    keys = {id(o): _offer_facts(o, policy) for o in offers}  # the facts share these offer objects
    return [job_facts(j, policy, offers, keys) for j in jobs]
