"""Trace jobs -> simulated jobs (a validated `JobSpec` each), and the job shapes placement shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.burst import demand, effective_max_wait
from broker.burst.money import BEIJING
from broker.burst.spot import restarts_text
from broker.durations import MAX_DURATION_S
from broker.jobspec import check_runtime_estimate
from broker.model import (
    AcceleratorRequest,
    Checkpoint,
    JobSpec,
    Priority,
    Residency,
    Resources,
    SpotMode,
    TenantId,
)
from broker.policy import Policy
from broker.sim.estimates import check_bias, estimate_s
from broker.sim.scenario import Scenario
from broker.sim.tenants import TenantDraw
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
    shape: JobSpec | None = None
    """`shape_spec(spec)`, one object shared by every job of the same shape (`build_jobs`), so
    placement verdicts can be kept per shape; None: not known (`shape_of` makes one)."""
    epoch: datetime = EPOCH  # the moment `arrival_s` counts from (a replay's: its first submission)

    @property
    def created_at(self) -> datetime:
        return self.epoch + timedelta(seconds=self.arrival_s)


def build_jobs(
    trace: Sequence[TraceJob], policy: Policy, scenario: Scenario, *, copy_shapes: bool = True
) -> list[SimJob]:
    """Compress time by `scenario.time_scale`, draw tenants (seeded), build and validate specs.

    With `copy_shapes`, a job of a shape already built is that job's spec with its own name and
    runtime estimate (both checked as validation would): the same specs, without validating
    every job again (tests/sim/test_sim_caches_jobs.py pins it against `copy_shapes=False`)."""
    draw = TenantDraw(policy, scenario)
    check_bias(scenario, {*draw.known, *draw.names, *(tj.tenant for tj in trace if tj.tenant)})
    t0 = trace[0].submit_s if trace else 0.0
    jobs: list[SimJob] = []
    shapes: dict[tuple[object, ...], tuple[JobSpec, JobSpec | None]] = {}  # key -> (a spec, its shape)
    for i, tj in enumerate(trace):
        tenant = draw.tenant(tj)
        runtime = min(tj.runtime_s, MAX_RUNTIME_S)
        accel = () if tj.gpu_spec and scenario.gpu_spec == "ignore" else tj.accelerators
        estimate = timedelta(seconds=estimate_s(scenario, tenant, i, runtime, MAX_RUNTIME_S))
        spot = (
            SpotMode.NEVER
            if scenario.no_spot_over_s is not None and runtime > scenario.no_spot_over_s
            else SpotMode.ALLOWED
        )
        every = scenario.checkpoint_interval_s
        cp = None if every is None or runtime <= every else timedelta(seconds=every)
        # Every spec field but the name and the runtime comes from these.
        key: tuple[object, ...] = (tj.count, accel, tj.cpus, tj.memory_gb, tj.max_wait_s, tj.priority)
        key = (*key, tj.residency, spot, cp, tj.nodes)
        known_shape = shapes.get(key)
        if copy_shapes and known_shape is not None and _valid_estimate(estimate):
            spec = known_shape[0].model_copy(update={"name": f"j-{i}", "runtime_estimate": estimate})
        else:
            spec = _spec(i, tj, accel, estimate, spot, cp)
        if known_shape is None:
            known_shape = shapes[key] = (spec, shape_spec(spec, policy))
        arrival = (tj.submit_s - t0) / scenario.time_scale
        mw = effective_max_wait(spec, tenant, policy).total_seconds()
        jobs.append(
            SimJob(i, f"j-{i}", TenantId(tenant), spec, arrival, runtime, demand(spec), mw, known_shape[1])
        )
    if jobs and max(j.arrival_s for j in jobs) > MAX_DURATION_S:  # (a simulated clock's dates end)
        span = max(tj.submit_s for tj in trace) - t0
        raise ValueError(
            f"time_scale {scenario.time_scale:g} (--time-scale, or the scenario's): the trace's "
            f"{span:,.0f} s of arrivals would span "
            f"{restarts_text(span / scenario.time_scale / (365 * 86400))} years (at most 10)"
        )
    return jobs


def _spec(
    i: int, tj: TraceJob, accel: tuple[str, ...], estimate: timedelta, spot: SpotMode, cp: timedelta | None
) -> JobSpec:
    """Job `i`'s spec, validated."""
    return JobSpec(
        name=f"j-{i}",
        command=("sim",),
        runtime_estimate=estimate,
        resources=Resources(
            accelerators=AcceleratorRequest(count=tj.count, any_of=accel),
            cpus=tj.cpus,
            memory_gb=tj.memory_gb,
            nodes=tj.nodes,
        ),
        max_wait=None if tj.max_wait_s is None else timedelta(seconds=round(tj.max_wait_s)),
        priority=Priority(tj.priority),
        data_residency=Residency(tj.residency),
        spot=spot,
        checkpoint=None if cp is None else Checkpoint(interval=cp),
    )


def _valid_estimate(estimate: timedelta) -> bool:
    """Whether `JobSpec` accepts `estimate` as a runtime estimate (its own check)."""
    try:
        check_runtime_estimate(estimate)
    except ValueError:
        return False
    return True


RUNTIME_FREE_PATHS = frozenset({"runtime_hours", "name"})
"""Job fields a shape-level placement may not depend on: when no compliance rule reads them,
placement's verdicts (which offers are allowed) do not either (its own shape memo is keyed
without them); only its scores do."""


def shape_spec(spec: JobSpec, policy: Policy) -> JobSpec | None:
    """The job with a fixed name and a one-hour runtime, standing for every job of its shape in
    placement's allow/deny verdicts; None when a rule reads the runtime or the name."""
    if any(len(p) < 2 or p[1] in RUNTIME_FREE_PATHS for p in policy.rules.job_paths):
        return None  # (a rule reading `job` whole reads them too)
    return spec.model_copy(update={"name": "shape", "runtime_estimate": timedelta(hours=1)})


def shape_of(job: SimJob, policy: Policy) -> JobSpec | None:
    """The job's shape spec: the shared one `build_jobs` made, else a new `shape_spec`."""
    return job.shape if job.shape is not None else shape_spec(job.spec, policy)
