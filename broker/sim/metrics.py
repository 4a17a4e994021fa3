"""Per-job records of a run and the per-strategy summary the JSON output carries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

import numpy as np

from broker.model import Offer
from broker.policy import Policy


@dataclass(slots=True)
class JobRecord:
    """What happened to one job in one strategy's run."""

    arrival_s: float = 0.0
    max_wait_s: float = 0.0
    tenant: str = ""
    runtime_s: float = 0.0
    demand_h: float = 0.0
    """Accelerator-hours (cores for CPU-only jobs) the job needs: what it asks of the on-prem pool."""
    onprem_acc_h: float = 0.0
    """Accelerator-hours (cores for CPU-only jobs) it ran on-prem, for the fair-share figures."""
    start_s: float = math.nan
    """First start (running on-prem, or the cloud instance up); NaN if it never started."""
    end_s: float = math.nan
    cost_onprem: float = 0.0
    cost_cloud: float = 0.0
    cash: float = 0.0
    voucher: float = 0.0
    carbon_g: float = 0.0
    burst: bool = False
    """The job's last attempt ran on a cloud."""
    rejected: bool = False
    compliant: bool = True
    attempts: int = 0
    interruptions: int = 0
    decisions: int = 0
    spot: bool = False
    """Some attempt ran on spot."""
    spot_over_limit: bool = False
    """Some spot attempt was expected to restart more often than the policy's limit."""
    preempted: int = 0
    """Times it was stopped on-prem for a job that would have burst (`burst.preempt_patient`)."""
    failed: bool = False
    """Failed as the broker fails a job requiring spot at `burst.spot_max_interruptions`."""

    @property
    def wait_s(self) -> float:
        return self.start_s - self.arrival_s

    def __reduce__(self) -> tuple[type[JobRecord], tuple[Any, ...]]:
        # Every run's records cross two process boundaries (side task -> side worker -> main):
        # the fields as one tuple pickle in half the time of the dataclass's per-record state.
        return JobRecord, _FIELDS(self)

    @property
    def cost(self) -> float:
        return self.cost_onprem + self.cost_cloud


_FIELDS = attrgetter(*(f.name for f in fields(JobRecord)))
"""A record's fields in the order `JobRecord(...)` takes them."""


@dataclass
class Series:
    """Step samples over simulated time for the plots."""

    t: list[float] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)
    onprem_util: list[float] = field(default_factory=list)
    cloud_instances: list[int] = field(default_factory=list)

    def add(self, t: float, queue: int, util: float, cloud: int) -> None:
        self.t.append(t)
        self.queue.append(queue)
        self.onprem_util.append(util)
        self.cloud_instances.append(cloud)


@dataclass
class RunResult:
    strategy: str
    records: list[JobRecord]
    series: Series
    decisions: int = 0
    budget_violations: int = 0
    stockout_failures: int = 0
    wall_s: float = 0.0
    runtime_ratios: dict[str, float] = field(default_factory=dict)
    """Each tenant's actual/estimate runtime ratio learned by the end of the run."""


def carbon_g(policy: Policy, offer: Offer, hours: float) -> float:
    """Grams of CO2: device power x count x hours x the site's intensity (as the carbon scorer counts)."""
    site = policy.site(offer.site)
    intensity = site.carbon_gco2_kwh if site is not None else 0.0
    if offer.accelerator is None:
        return policy.document.default_power_w / 1000.0 * hours * intensity
    spec = policy.hardware(offer.accelerator).spec
    kw = (spec.power_w if spec is not None else policy.document.default_power_w) / 1000.0
    return kw * offer.count * hours * intensity


GIVE_UP_INTERRUPTIONS = 1000
"""Spot interruptions after which the simulated world gives a job up, never finished (a real
owner would have cancelled it long before): a scenario far riskier than the policy believes (20
interruptions an hour against 1 h of work) ran a strategy's e^20 restarts, without end."""


def late(rec: JobRecord) -> bool:
    """Started after its max_wait (or never)."""
    return math.isnan(rec.start_s) or rec.wait_s > rec.max_wait_s + 1e-6


def finished_late(rec: JobRecord) -> bool:
    """Finished after it would have, started at its deadline (arrival + max_wait + runtime), or
    never: what stopping it (`preempt_patient`) or a spot interruption costs it, which `late`,
    counting its first start, does not see."""
    return math.isnan(rec.end_s) or rec.end_s > rec.arrival_s + rec.max_wait_s + rec.runtime_s + 1e-6


def outside_bound(rec: JobRecord) -> bool:
    """Not one on-time run, as the LP bound's on-time jobs are (it counts such a job among its late
    ones): started late or never, stopped on-prem and run again (`preempt_patient`: its work is
    split, the rest after its window), or run on-prem at the last after a spot interruption or
    finished late there. (A cloud run is bounded with no window: late there is no matter.)"""
    onprem_late = not rec.burst and (rec.interruptions > 0 or finished_late(rec))
    return late(rec) or rec.preempted > 0 or onprem_late


def summarize(run: RunResult) -> dict[str, Any]:
    """The per-strategy numbers of the JSON output."""
    recs = [r for r in run.records if not r.rejected]
    waits = np.array([r.wait_s for r in recs if not math.isnan(r.start_s)], dtype=float)
    n = len(recs)
    cost = sum(r.cost for r in recs)
    return {
        "jobs": n,
        "rejected": len(run.records) - n,
        "never_started": sum(1 for r in recs if math.isnan(r.start_s)),
        "cost": round(cost, 2),
        "cost_onprem": round(sum(r.cost_onprem for r in recs), 2),
        "cost_cloud": round(sum(r.cost_cloud for r in recs), 2),
        "cash": round(sum(r.cash for r in recs), 2),
        "voucher": round(sum(r.voucher for r in recs), 2),
        "p50_wait_s": round(float(np.percentile(waits, 50)), 1) if waits.size else None,
        "p95_wait_s": round(float(np.percentile(waits, 95)), 1) if waits.size else None,
        "mean_wait_s": round(float(waits.mean()), 1) if waits.size else None,
        # (None: no job admitted, nothing to attain; 1.0 read as "every job on time" for 0 jobs)
        "slo_attainment": round(1 - sum(1 for r in recs if late(r)) / n, 4) if n else None,
        "late_jobs": sum(1 for r in recs if late(r)),
        "late_finish_jobs": sum(1 for r in recs if finished_late(r)),
        "burst_fraction": round(sum(1 for r in recs if r.burst) / n, 4) if n else 0.0,
        "carbon_kg": round(sum(r.carbon_g for r in recs) / 1000, 1),
        "budget_violations": run.budget_violations,
        "compliance_violations": sum(1 for r in run.records if not r.compliant),
        "spot_interruptions": sum(r.interruptions for r in recs),
        "spot_given_up": sum(1 for r in recs if r.interruptions >= GIVE_UP_INTERRUPTIONS),
        "spot_failed": sum(1 for r in recs if r.failed),
        "spot_jobs": sum(1 for r in recs if r.spot),
        "spot_over_restart_limit": sum(1 for r in recs if r.spot_over_limit),
        "preempted_jobs": sum(1 for r in recs if r.preempted),
        "stockout_failures": run.stockout_failures,
        "decisions": run.decisions,
        "wall_s": round(run.wall_s, 2),
    }
