"""The simulator engine's parts: the strategy it drives and per-job state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from broker.burst import TenantMoney
from broker.burst.snapshot import PassSnapshot
from broker.decision import Decision
from broker.fairshare import QueuedWork, Standing
from broker.fairshare.book import demand_of
from broker.model import Offer
from broker.placement.cost import Draws
from broker.sim.jobs import SimJob
from broker.sim.metrics import JobRecord

EVENT_KINDS = FINISH, UP, FAIL, STOP, TIMER = range(5)
"""The engine's event kinds, in the order they are handled at equal times (capacity frees first)."""


class Strategy(Protocol):
    name: str

    def decide(
        self, job: SimJob, snap: PassSnapshot, money: TenantMoney, pending: datetime | None
    ) -> Decision:
        """One job's decision within a pass (must claim/enqueue on-prem offers in `snap`)."""
        ...

    def candidates(self, job: SimJob, decision: Decision) -> tuple[str, ...]:
        """On-prem partition keys the job could run on (capacity there may start it)."""
        ...

    def timer(self, job: SimJob, decision: Decision, now_s: float, backoff_s: float) -> float | None:
        """When to re-decide a waiting job if nothing else happens (None: only on events)."""
        ...

    def wants_cloud(self, decision: Decision) -> bool:
        """Whether a waiting job is held back by the cloud side (route limits, budget, blocks)."""
        ...


class Fenwick:
    """Prefix sums of queued backlog (accelerator-hours) by job index."""

    def __init__(self, n: int) -> None:
        self.t = [0.0] * (n + 1)

    def add(self, i: int, v: float) -> None:
        i += 1
        while i < len(self.t):
            self.t[i] += v
            i += i & -i

    def prefix(self, i: int) -> float:
        """Sum over indices < i."""
        s = 0.0
        while i > 0:
            s += self.t[i]
            i -= i & -i
        return s


@dataclass(slots=True)
class SimState:
    """One job's state in a run: queued or not, its decision memory, its attempt and record."""

    queued: bool = False
    gen: int = 0
    listed: int = -1
    """Generation for which the job sits in the partition/cloud deques."""
    pending: datetime | None = None
    burst_before: bool = False
    wait_key: str | None = None
    wait_units_h: float = 0.0
    cands: tuple[str, ...] | None = None
    timer_ver: int = 0
    backoff: float = 0.0
    offer: Offer | None = None
    running_since: float = 0.0
    done_s: float = 0.0
    """Work kept by checkpoints across interruptions (a restart runs only the rest)."""
    reserved: tuple[float, float, Draws, str] = (0.0, 0.0, (), "")
    rec: JobRecord = field(default_factory=JobRecord)
    work: QueuedWork | None = None
    """The job as fair share orders it, kept (it changes only with its candidate partitions)."""
    deciding: SimJob | None = None
    """The job as decided once off spot (its spec on-demand only, `broker.sim.spot_rule`)."""

    def fair_work(self, job: SimJob, cands: tuple[str, ...]) -> QueuedWork:
        """`queued_work(job, cands)`, built once per candidate set (read on every capacity event)."""
        got = self.work
        if got is None or got.partitions != cands:
            got = self.work = queued_work(job, cands)
        return got

    @classmethod
    def of(cls, j: SimJob) -> SimState:
        """A fresh state for a job not yet arrived."""
        demand_h = j.demand * j.runtime_s / 3600
        rec = JobRecord(
            arrival_s=j.arrival_s,
            max_wait_s=j.max_wait_s,
            tenant=j.tenant,
            runtime_s=j.runtime_s,
            demand_h=demand_h,
        )
        return cls(rec=rec)


def queued_work(job: SimJob, cands: tuple[str, ...]) -> QueuedWork:
    """A waiting job as fair share orders it (deadline = arrival + max_wait)."""
    return QueuedWork(
        str(job.index),
        job.tenant,
        job.spec.priority,
        job.created_at,
        demand_of(job.spec),  # a gang's every node, as live
        job.demand,
        cands,
        due=job.created_at + timedelta(seconds=job.max_wait_s),
    )


Line = tuple[str, str, float]
"""(tenant, priority, max_wait seconds): one waiting line of a partition (`line_of`)."""


def line_of(job: SimJob) -> Line:
    """The waiting line a job joins on each partition it could use: its tenant's jobs of one priority
    and max_wait, in arrival order, so also in the dispatcher's order (priority, then deadline).
    A capacity event reads the first few jobs of each line: one line per tenant would let a
    tenant's low-priority backlog hide its later normal-priority jobs, which the live
    dispatcher, ordering each tenant's queue by priority first, decides ahead of them."""
    return job.tenant, job.spec.priority.value, job.max_wait_s


def take_heads(
    ordered: Iterable[Standing],
    jobs: Sequence[SimJob],
    free: int,
    hold: bool,
    limit: int,
    on_hold: Callable[[Standing, int], None] | None = None,
) -> list[int]:
    """The first jobs in fair-share order that `free` units could start (at most `limit`); with
    `hold`, capacity stops at an in-quota (or under-share) job that does not fit, as live
    (`on_hold` is told which)."""
    out: list[int] = []
    units = 0
    for standing in ordered:
        j = int(standing.job_id)
        if not standing.may_run_onprem:
            continue
        if jobs[j].demand <= free - units:
            out.append(j)
            units += jobs[j].demand
        elif hold and (standing.in_quota or standing.owed or standing.ratio < 1.0):
            if on_hold is not None:
                on_hold(standing, jobs[j].demand)
            break  # the free capacity is held for this job (as the live dispatcher holds it)
        if units >= free or len(out) >= limit:
            break
    return out
