"""Replay of the broker's own history: stored jobs -> simulated jobs, two policies, one diff.

Jobs are the stored jobs and the submissions the broker refused at the door (the audit trail
keeps their specs): a candidate may admit those. Arrivals are the recorded submit times;
runtimes are what they actually ran (first RUNNING to the terminal event; for a job that ran
more than once, its running spans summed when it checkpoints, else its last span) or, for jobs
that never ran, their estimate. The simulator's engine (`broker.sim.engine`) replays them in the
default scenario's world, with the capacity errors the store recorded per site as that site's
stock-out rate.

Prices: for every cloud offer the broker launched in the period, the price its attempt
recorded (the newest one per offer key, in the currency it was quoted in) replaces the policy's
catalog price, in both runs. On-prem partitions keep each policy's own `price_hour`: that is a
shadow price the policy sets, so a candidate that changes it must show the change. Offers never
launched keep the catalog price (there is nothing recorded to replay), and one price per offer
holds for the whole replay (no price changes over time).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.burst import demand, effective_max_wait
from broker.burst.inputs import is_onprem
from broker.burst.runtimes import work_s
from broker.errors import BrokerError
from broker.model import Job, JobId, JobSpec, JobState, SiteId
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.sim.admission import Admission, calls_refused
from broker.sim.engine import Engine
from broker.sim.jobs import MAX_RUNTIME_S, SimJob
from broker.sim.metrics import RunResult, summarize
from broker.sim.refusals import judge
from broker.sim.scenario import Delay, Scenario, SiteWorld, StockOuts
from broker.sim.strategies import PolicyStrategy
from broker.store import AuditFilter
from broker.store.base import JobStore

PAGE = 500
LAUNCHES = 100
"""Each site's newest launches read for its provisioning delay (as the live route's p95 reads)."""
MAX_REFUSALS = 1_000_000
"""Refused submissions read at most (the store keeps each tenant's newest `KEEP_REFUSALS`)."""


class ReplayError(BrokerError):
    """Nothing to replay, or a store that cannot be read."""


@dataclass(frozen=True)
class History:
    jobs: list[Job]
    runtimes_s: dict[str, float]
    """Job id -> seconds it actually ran (jobs that ran and ended; a job still running, how long
    it had run by the store's last update where that passes its estimate)."""
    capacity_errors: dict[str, int] = field(default_factory=dict)
    """Site -> launches the backend refused for want of capacity (attempt errors)."""
    prices: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Offer key -> (price per hour, currency) its newest attempt in the period recorded."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Why -> stored jobs left out of the replay (cancelled before any launch: nothing ran)."""
    refused_at_submit: frozenset[str] = frozenset()
    """Ids (`refused-N`) of the jobs in `jobs` that are submissions the broker refused at the door:
    no job row, only the audit trail's record of their spec (`refused_submissions`)."""
    launch_s: dict[str, list[float]] = field(default_factory=dict)
    """Site -> seconds each of its newest launches took, attempt created to job running."""


def read_history(store: JobStore, since: datetime | None) -> History:
    """Every stored job submitted at or after `since`, oldest first, with its actual runtime."""
    jobs: list[Job] = []
    token = ""
    while True:
        page = store.list_jobs(None, page_size=PAGE, page_token=token)
        jobs.extend(j for j in page.jobs if since is None or j.created_at >= since)
        token = page.next_page_token
        if not token:
            break
    jobs.sort(key=lambda j: (j.created_at, j.id))
    runtimes: dict[str, float] = {}
    running: dict[str, datetime] = {}
    for i in range(0, len(jobs), PAGE):
        times = store.run_times([j.id for j in jobs[i : i + PAGE]])
        for job_id, (started, ended) in times.items():
            if started is None and ended is not None:
                # Finished before the broker saw it running (a job of a second or two): its
                # run began at most when its last attempt was launched.
                started = _launched(store, job_id)
            if started is not None and ended is not None and ended >= started:
                runtimes[job_id] = (ended - started).total_seconds()
            elif started is not None and ended is None:
                running[job_id] = started
    # A job still running when the store was read has run at least until the store's last
    # update: that, where it already passes the job's estimate.
    last = max((j.updated_at for j in jobs), default=None)
    for job in jobs:
        so_far = (last - running[job.id]).total_seconds() if job.id in running and last else 0.0
        if so_far > job.spec.runtime_estimate.total_seconds():
            runtimes[job.id] = so_far
    for job in jobs:
        if job.attempts > 1 and job.id in runtimes:  # the span would count its requeued waits
            runtimes[job.id] = _work_s(store, job) or runtimes[job.id]
    capacity: dict[str, int] = {}
    quoted: dict[str, tuple[datetime, float, str]] = {}
    launched: set[str] = set()
    sites: set[str] = set()
    for job in jobs:
        for attempt in store.attempts_for(job.id):
            launched.add(job.id)
            sites.add(str(attempt.site))
            # How the dispatcher records a backend's CapacityError (`Type: message`).
            if attempt.error.startswith("CapacityError"):
                capacity[str(attempt.site)] = capacity.get(str(attempt.site), 0) + 1
            o = attempt.offer
            at = o.price_read_at or attempt.created_at
            if o.key not in quoted or at >= quoted[o.key][0]:
                quoted[o.key] = (at, o.price_per_hour, o.currency)
    prices = {key: (price, cur) for key, (_, price, cur) in sorted(quoted.items())}
    # A job cancelled while it queued never ran: replaying it for its whole estimate would
    # charge both policies for work nobody did.
    kept = [j for j in jobs if j.state != JobState.CANCELLED or j.id in launched or j.id in runtimes]
    skipped = {"cancelled before any launch": len(jobs) - len(kept)} if len(kept) < len(jobs) else {}
    refused, unreadable = refused_at_submit(store, since)
    if unreadable:
        skipped["refused at submit, spec no longer valid"] = unreadable
    kept = sorted([*kept, *refused], key=lambda j: (j.created_at, j.id))
    launches = {site: got for site in sorted(sites) if (got := store.launch_times(SiteId(site), LAUNCHES))}
    return History(kept, runtimes, capacity, prices, skipped, frozenset(j.id for j in refused), launches)


def refused_at_submit(store: JobStore, since: datetime | None) -> tuple[list[Job], int]:
    """The submissions refused at the door since `since` as jobs (`refused-N`, oldest first, failed,
    submitted when refused), and how many specs no longer validate. A candidate may admit them."""
    jobs: list[Job] = []
    unreadable = 0
    for n, r in enumerate(store.refusals(AuditFilter(since=since, limit=MAX_REFUSALS)), 1):
        try:
            spec = JobSpec.model_validate(json.loads(r.spec))
        except (ValueError, TypeError):  # (pydantic's ValidationError is a ValueError)
            unreadable += 1
            continue
        jobs.append(
            Job(
                id=JobId(f"refused-{n}"), tenant=r.tenant, spec=spec, state=JobState.FAILED,
                created_at=r.time, updated_at=r.time, message=r.message, policy_hash=r.policy_hash,
            )
        )
    return jobs, unreadable


def scenario_for(history: History) -> Scenario:
    """The default world, with each site's recorded capacity errors as its stock-out rate and its
    recorded launch times (fastest, median, slowest) as its provisioning delay."""
    if not history.jobs:
        return Scenario()
    span_s = (history.jobs[-1].created_at - history.jobs[0].created_at).total_seconds()
    days = max(span_s, 3600.0) / 86400  # at least an hour: a burst of errors is not a rate
    sites = {
        site: SiteWorld(stockouts=StockOuts(per_day=n / days)) for site, n in history.capacity_errors.items()
    }
    for site, times in history.launch_s.items():
        delay = Delay(min_s=min(times), mode_s=statistics.median_low(times), max_s=max(times))
        sites[site] = sites.get(site, SiteWorld()).model_copy(update={"provisioning": delay})
    return Scenario(sites=dict(sorted(sites.items())))


def _work_s(store: JobStore, job: Job) -> float | None:
    """Seconds of work of a job that ran more than once (`work_s`: what its checkpoints kept of its
    earlier runs, and its last run); None if it never ran."""
    spans: list[float] = []
    start: datetime | None = None
    for event in store.events_after(JobId(job.id), 0):
        if event.state == JobState.RUNNING:
            start = start or event.time
        elif start is not None:
            spans.append((event.time - start).total_seconds())
            start = None
    if not spans:
        return None
    every = job.spec.checkpoint.interval.total_seconds() if job.spec.checkpoint is not None else None
    return work_s(spans, every)


def _launched(store: JobStore, job_id: str) -> datetime | None:
    events = store.events_after(JobId(job_id), 0)
    return next((e.time for e in reversed(events) if e.state == JobState.PROVISIONING), None)


def sim_jobs(history: History, policy: Policy) -> list[SimJob]:
    """The stored jobs as the simulator's jobs (their own specs, tenants and submit times)."""
    if not history.jobs:
        return []
    t0 = history.jobs[0].created_at
    out: list[SimJob] = []
    for i, job in enumerate(history.jobs):
        runtime = history.runtimes_s.get(job.id, job.spec.runtime_estimate.total_seconds())
        runtime = min(max(runtime, 1.0), MAX_RUNTIME_S)
        mw = effective_max_wait(job.spec, job.tenant, policy).total_seconds()
        arrival = (job.created_at - t0).total_seconds()
        # At the recorded times: a deadline, a voucher's expiry and a budget month mean what they did.
        out.append(SimJob(i, job.id, job.tenant, job.spec, arrival, runtime, demand(job.spec), mw, epoch=t0))
    return out


@dataclass
class PolicyRun:
    run: RunResult
    sites: list[str | None]
    """Per job, the site of its last attempt (None: refused or never started)."""
    places: list[str | None] = field(default_factory=list)
    """Per job, where its last attempt ran: `site/partition or instance type`, `/spot` on spot."""
    prices: dict[str, tuple[float, str]] = field(default_factory=dict)
    """The recorded prices this run used (cloud offers only)."""
    refusals: dict[int, str] = field(default_factory=dict)
    """Job index -> why the policy refuses it (the rule that blocks it first)."""


def market_prices(history: History, policy: Policy) -> dict[str, tuple[float, str]]:
    """The recorded prices of the policy's cloud offers: an on-prem partition's price is the
    policy's own, and an offer the policy no longer has is priced nowhere."""
    cloud = {o.key for o in static_offers(policy) if not is_onprem(policy, o.site)}
    return {key: quote for key, quote in history.prices.items() if key in cloud}


def refusal_reason(job: Job, policy: Policy) -> str:
    """`rule: message` of what refuses the job under `policy` (`Judged.reason`)."""
    return judge(job.spec, job.tenant, job.created_at, policy).reason()


def at_the_door(job: Job, policy: Policy) -> str | None:
    """What refuses the job at submit under `policy` (`refusal_reason`), None if it is admitted."""
    judged = judge(job.spec, job.tenant, job.created_at, policy)
    return None if judged.admitted else judged.reason()


def replay(policy: Policy, history: History, scenario: Scenario | None = None) -> PolicyRun:
    """Replay the history under one policy."""
    jobs = sim_jobs(history, policy)
    world = scenario or scenario_for(history)
    prices = market_prices(history, policy)
    # Submissions over the policy's quotas are refused, as live; a call any job of which the
    # policy refuses at the door is refused whole.
    admission = Admission(policy, calls_refused(history.jobs, lambda job: at_the_door(job, policy)))
    engine = Engine(policy, jobs, world, PolicyStrategy(policy), prices=prices, admission=admission)
    run = engine.run()
    sites = [
        None if st.rec.rejected or st.offer is None or math.isnan(st.rec.start_s) else str(st.offer.site)
        for st in engine.state
    ]
    places = [
        None
        if site is None or st.offer is None
        else f"{st.offer.partition}{'/spot' if st.offer.spot else ''}"
        for site, st in zip(sites, engine.state, strict=True)
    ]
    refusals = {
        i: admission.refused.get(i) or refusal_reason(history.jobs[i], policy)
        for i, st in enumerate(engine.state)
        if st.rec.rejected
    }
    return PolicyRun(run, sites, places, prices, refusals)


KEYS = (
    "cost", "p50_wait_s", "p95_wait_s", "burst_fraction", "rejected", "never_started", "late_jobs",
    "late_finish_jobs",
)


def diff(history: History, before: PolicyRun, after: PolicyRun) -> dict[str, Any]:
    """Totals of both runs, their difference, and the jobs whose outcome changed."""
    a, b = summarize(before.run), summarize(after.run)
    for s, r in ((a, before), (b, after)):
        s["bursts"] = sum(1 for rec in r.run.records if rec.burst and not rec.rejected)
    delta = {
        k: None if a.get(k) is None or b.get(k) is None else round(b[k] - a[k], 4) for k in (*KEYS, "bursts")
    }
    moved, refused, admitted, repriced = [], [], [], []
    for i, job in enumerate(history.jobs):
        ra, rb = before.run.records[i], after.run.records[i]
        row = {"job": job.id, "tenant": job.tenant, "name": job.spec.name, "recorded_site": job.site}
        if job.id in history.refused_at_submit:
            row["refused_at_submit"] = job.message
        if rb.rejected and not ra.rejected:
            refused.append({**row, "site_before": before.sites[i], "reason": after.refusals.get(i)})
        elif ra.rejected and not rb.rejected:
            admitted.append({**row, "site_after": after.sites[i], "reason_before": before.refusals.get(i)})
        elif before.places[i] != after.places[i]:  # another site, partition, instance type or market
            moved.append(
                {
                    **row,
                    "site_before": before.sites[i],
                    "site_after": after.sites[i],
                    "placed_before": before.places[i],
                    "placed_after": after.places[i],
                }
            )
        elif not math.isclose(ra.cost, rb.cost, rel_tol=1e-6, abs_tol=1e-4):  # same place, other runs
            repriced.append({**row, "placed": after.places[i], "cost_before": round(ra.cost, 4),
                             "cost_after": round(rb.cost, 4), "runs_before": ra.attempts,
                             "runs_after": rb.attempts})
    return {
        "jobs": len(history.jobs),
        "refused_at_submit": len(history.refused_at_submit),
        "skipped": dict(history.skipped),
        "capacity_errors": dict(history.capacity_errors),
        "recorded_prices": {
            k: {"price_per_hour": p, "currency": c}
            for k, (p, c) in sorted({**before.prices, **after.prices}.items())
        },
        "current": a,
        "candidate": b,
        "delta": delta,
        "placement_changed": moved,
        "cost_changed": repriced,
        "refusals_new": refused,
        "refusals_gone": admitted,
    }
