"""Operator views: this month's spend per tenant and site, and the broker's status."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from broker.api import broker_service_pb2 as pb
from broker.burst import is_onprem
from broker.burst.money import BEIJING, budget_alert, month_of
from broker.burst.projection import NEVER_S
from broker.burst.snapshot import PassSnapshot, partition_key
from broker.catalog.accelerators import normalize
from broker.dispatch.launch_history import read_recent_bursts
from broker.dispatch.offers import OfferReading
from broker.ha.lease_watch import LeaseWatch
from broker.model import JobSpec, JobState, TenantId
from broker.offerview import unread_offers
from broker.placement.health import health_summary
from broker.planning import Planner
from broker.quota import QuotaUsage
from broker.serde import ts_to_proto
from broker.store import JobNotFoundError, JobStore
from broker.validation import BadRequestError, FieldViolation
from broker.voucher_time import month_span

GROUPINGS = {
    pb.SPEND_GROUPING_UNSPECIFIED: ("tenant", "site"),
    pb.SPEND_GROUPING_DAY: ("day",),
    pb.SPEND_GROUPING_SITE: ("site",),
    pb.SPEND_GROUPING_TENANT: ("tenant",),
}


MAX_MONTHS = 240
"""Budget months one spend report reads at most (20 years)."""


def _months(since: datetime, until: datetime) -> list[str]:
    """Budget months (Beijing time) that [since, until) touches, oldest first."""
    out: list[str] = []
    day = since.astimezone(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while day < until and len(out) < MAX_MONTHS:
        out.append(month_of(day))
        day = (day + timedelta(days=32)).replace(day=1)
    return out


def _check_window(
    since: datetime | None, until: datetime | None, start: datetime, end: datetime, now: datetime
) -> None:
    """A range that is empty with one bound left to its default, or longer than the months read,
    is refused naming the bound (it read as "no spend", exit 0): of two, the one further from now."""
    if end <= start:
        bound = "until" if until is not None else "since"
        default = "the start of this month" if since is None else "now"
        raise BadRequestError([FieldViolation(bound, f"must be after since (here {default})"
                                              if bound == "until" else "must be in the past")])
    if len(_months(start, end)) >= MAX_MONTHS:
        far = "until" if until is not None and (since is None or until - now > now - since) else "since"
        raise BadRequestError([FieldViolation(
            far, f"a range may span at most {MAX_MONTHS // 12} years (of budget months)")])


def spend_report(
    planner: Planner,
    tenant: TenantId,
    asked: str,
    store: JobStore,
    *,
    operator: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: pb.SpendGrouping.ValueType = pb.SPEND_GROUPING_UNSPECIFIED,
) -> pb.GetSpendResponse:
    """Spend of bursts run in [since, until) (default: this month so far), grouped.

    Tenants see their own; internal tenants and operators anyone's (`*` for all). Not asked for
    one, an operator gets every tenant's, as its job list is every tenant's. Budget fields are
    set only for one tenant that has a budget, so 0 and "no budget" differ. A tenant the policy
    does not declare, with no spend in the range, is not found (unless it is the caller's own).
    """
    policy = planner.policy
    now = planner.clock.now()
    caller = policy.tenant(tenant)
    target = asked or ("*" if operator else tenant)
    if target != tenant and not operator and (caller is None or caller.kind != "internal"):
        raise JobNotFoundError(f"tenant {target!r} not found")
    month = month_of(now)
    start = since or now.astimezone(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = until or now
    _check_window(since, until, start, end, now)
    keys = GROUPINGS.get(group_by, GROUPINGS[pb.SPEND_GROUPING_UNSPECIFIED])
    lines = _spend_lines(store, target, start, end, keys)
    if target not in ("*", tenant) and policy.tenant(target) is None and not lines:
        # Not a tenant at all (a typo?): "No monthly budget limit" would read as a real one's.
        raise JobNotFoundError(f"tenant {target!r} not found: the policy declares no such tenant")
    keyed = sorted(lines.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))
    # Each column in cents that add up to its total, whatever the grouping: the total is the true
    # one (as the budget counts it), the lines its largest-remainder split (five raw 0.014 lines
    # show 0.02 twice and 0.01 three times under 0.07, never five 0.01 under 0.07).
    spent, reserved, voucher = (cents_adding_up([v[k] for _, v in keyed]) for k in range(3))
    resp = pb.GetSpendResponse(
        currency=policy.currency,
        month=month,
        lines=[
            pb.SpendLine(
                tenant=t, site=site, day=day, spent=spent[i], reserved=reserved[i], voucher=voucher[i]
            )
            for i, ((t, site, day), _) in enumerate(keyed)
        ],
        total_spent=round(sum(v[0] for _, v in keyed), 2),
        total_reserved=round(sum(v[1] for _, v in keyed), 2),
    )
    resp.since.CopyFrom(ts_to_proto(start))
    resp.until.CopyFrom(ts_to_proto(end))
    if target != "*":
        _add_tenant_money(resp, planner, target, now, store)
    elif (cap := burst_cap(planner, now, store)) is not None:
        resp.burst_cap.CopyFrom(cap)
    return resp


def cents_adding_up(values: Sequence[float]) -> list[float]:
    """`values` in cents whose sum is their sum's, rounded: each floored, then the cents left
    over go to the largest remainders (the largest-remainder method)."""
    total = round(round(sum(values), 2) * 100)  # (the total shown, in cents)
    floors = [math.floor(v * 100 + 1e-9) for v in values]
    order = sorted(range(len(values)), key=lambda i: floors[i] - values[i] * 100)
    for i in order[: max(0, total - sum(floors))]:
        floors[i] += 1
    return [f / 100 for f in floors]


def burst_cap(planner: Planner, now: datetime, store: JobStore) -> pb.BurstCap | None:
    """The policy's global burst cap against every tenant's spend and reservations this month
    (None: the policy has no cap). For those who see every tenant's money only."""
    cap = planner.policy.burst.budget.global_monthly_cap
    if cap is None:
        return None
    used = planner.ledger.cap_used(now, store)
    left, over = left_and_over(cap - used)
    return pb.BurstCap(cap=cap, used=round(used, 2), left=left, over=over)


def _add_tenant_money(
    resp: pb.GetSpendResponse, planner: Planner, target: str, now: datetime, store: JobStore
) -> None:
    """One tenant's budget, budget left, alert and vouchers left this month."""
    policy = planner.policy
    money = planner.money(target, now, store)
    budget = planner.budget(target)
    if budget is not None:
        resp.budget = budget
        resp.budget_alert_fraction = policy.burst.budget.alert_fraction
        resp.budget_alert = budget_alert(policy, target, money)
    if money.budget_left is not None:
        resp.budget_left, resp.budget_over = left_and_over(money.budget_left)
    resp.vouchers_left = sum(money.voucher_balances.values())


def _spend_lines(
    store: JobStore, target: str, start: datetime, end: datetime, keys: tuple[str, ...]
) -> dict[tuple[str, str, str], list[float]]:
    """(tenant, site, day) -> [spent, reserved, voucher] of bursts run in [start, end): each its
    part run there (per day it ran), as the budget counts it; a reservation, of work still to run,
    its part up to the end of the range's last budget month. An entry kept without its run (from
    before runs were kept) counts wholly at its attempt's start."""
    lines: dict[tuple[str, str, str], list[float]] = {}
    months = _months(start, end)
    reach = month_span(months[-1])[1] if months else end
    seen: set[str] = set()
    for m in months:
        for e in store.spend_entries(m, None if target == "*" else TenantId(target)):
            if e.attempt_id in seen:  # (a run across a month's end is an entry of both)
                continue
            seen.add(e.attempt_id)
            if e.started is None or e.ends is None:
                began = store.get_attempt(e.attempt_id).created_at
                parts = [(began.astimezone(BEIJING).date().isoformat(), 1.0)] if start <= began < end else []
            else:
                parts = e.days(start, end if e.settled else max(end, reach))
            for day, part in parts:
                key = (
                    e.tenant if "tenant" in keys else "",
                    e.site if "site" in keys else "",
                    day if "day" in keys else "",
                )
                line = lines.setdefault(key, [0.0, 0.0, 0.0])
                if e.settled:
                    line[0] += e.spent * part
                else:
                    line[1] += e.reserved * part
                line[2] += e.voucher * part
    return lines


def left_and_over(left: float) -> tuple[float, float]:
    """(left, over) of a limit in cents: a limit lowered below what is already spent has 0.00
    left and is over by the rest, never "-0.08 left"."""
    return round(max(0.0, left), 2), round(max(0.0, -left), 2)


def quota_to_proto(tenant: TenantId, usage: QuotaUsage) -> pb.QuotaStatus:
    lim = usage.limits
    return pb.QuotaStatus(
        tenant=tenant,
        max_queued_jobs=lim.max_queued_jobs,
        unfinished_jobs=usage.unfinished_jobs,
        submit_rate=lim.submit_rate,
        submit_burst=lim.submit_burst,
        submit_tokens=round(usage.submit_tokens, 1),
        max_spec_bytes=lim.max_spec_bytes,
        max_env=lim.max_env,
        max_labels=lim.max_labels,
        max_argv=lim.max_argv,
        max_watch_streams=lim.max_watch_streams,
        watch_streams=usage.watch_streams,
    )


def fair_share_protos(planner: Planner, now: datetime, tenant: str | None) -> list[pb.TenantShareStatus]:
    """Each tenant's fair-share standing and quotas (`tenant`: only that one's)."""
    out = []
    for s in planner.fair.shown(planner.policy, now):
        if tenant is not None and s.tenant != tenant:
            continue
        row = pb.TenantShareStatus(tenant=s.tenant, weight=s.weight, usage_share=s.usage_share)
        if s.ratio is not None:
            row.share_ratio = s.ratio
        row.quotas.extend(
            pb.PartitionQuotaUse(partition=q.partition, guaranteed=q.guaranteed, in_use=q.in_use,
                                 borrowed=q.borrowed)
            for q in s.quotas
        )
        out.append(row)
    return out


def status_report(
    planner: Planner,
    store: JobStore,
    bursts: Sequence[datetime],
    *,
    tenant: TenantId,
    operator: bool,
    quota: QuotaUsage | None = None,
    reading: OfferReading | None = None,
    lease_watch: LeaseWatch | None = None,
) -> pb.GetStatusResponse:
    """Capacity and waits per partition, jobs by state and site, money and quota.

    `reading`: the offers read off the event loop (`OfferSource.current`); the last one if None.
    `lease_watch`: an API replica's view of the scheduler's lease (its own clock, not the leader's).

    An operator sees every tenant and the sites' error texts; a tenant sees its own jobs,
    budget and quota, and only the kind of trouble a sick site has.
    """
    now = planner.clock.now()
    resp = pb.GetStatusResponse(policy_hash=planner.policy_hash, operator_view=operator)
    if quota is not None:
        resp.quota.CopyFrom(quota_to_proto(tenant, quota))
    _add_partitions(resp, planner, reading or planner.offers.latest(), store)
    for state, n in store.count_by_state(None if operator else tenant).items():
        resp.jobs_by_state[state.value] = n
    for job in store.jobs_in_states([JobState.PROVISIONING, JobState.RUNNING]):
        if job.site and (operator or job.tenant == tenant):
            resp.active_jobs_by_site[job.site] = resp.active_jobs_by_site[job.site] + 1
    hour_ago = now - timedelta(hours=1)
    if not operator:  # every tenant's bursts are the operator's business: its own, from the store
        bursts = read_recent_bursts(planner.policy, store, now, tenant)
    resp.burst_decisions_last_hour = sum(1 for b in bursts if b >= hour_ago)
    shown = [t.id for t in planner.policy.tenants] if operator else [tenant]
    tenants = _add_budgets(resp, planner, now, store, shown)
    if operator and (cap := burst_cap(planner, now, store)) is not None:
        resp.burst_cap.CopyFrom(cap)
    lease = store.leadership() if operator else None
    if operator and lease is None and lease_watch is not None:  # a replica that no one leads yet
        resp.scheduler.CopyFrom(pb.SchedulerLease(expired=True))
    if lease is not None:  # any replica names the leader
        resp.scheduler.CopyFrom(
            pb.SchedulerLease(
                holder=lease.holder,
                epoch=lease.epoch,
                lease_until=ts_to_proto(lease.lease_until),
                expired=lease_watch.expired(lease, now) if lease_watch else lease.lease_until <= now,
            )
        )
    unhealthy: dict[str, str] = {str(site): why for site, why in planner.unhealthy_now().items()}
    if not operator:
        unhealthy = {site: health_summary(why) for site, why in unhealthy.items()}
    resp.unhealthy_sites.update(unhealthy)
    resp.fair_share.extend(fair_share_protos(planner, now, None if operator else tenant))
    resp.currency = planner.policy.currency
    blocked = planner.health.block_notes() if operator else {}  # (operators' business)
    status = {"tenants": tenants, "unhealthy": unhealthy, "currency": resp.currency, "blocked": blocked}
    resp.status_json = json.dumps(status, default=str)
    return resp


def _add_partitions(
    resp: pb.GetStatusResponse, planner: Planner, reading: OfferReading, store: JobStore
) -> None:
    """One line per on-prem partition: free/total, expected wait, jobs queued for it."""
    offers, totals = reading.offers, reading.totals
    unread = unread_offers(planner.policy, offers, planner.unhealthy_now(), totals)
    seen: set[str] = set()
    for o in offers:
        key = partition_key(o)
        if not is_onprem(planner.policy, o.site) or key in seen:
            continue
        seen.add(key)
        unknown = o.key in unread  # (its total is still the policy's size of it)
        resp.partitions.append(
            pb.PartitionStatus(
                site=o.site,
                partition=o.instance_type,
                accelerator=o.accelerator or "",
                total=totals.get(key, o.free or 0),
                free=0 if unknown else o.free or 0,
                expected_wait_seconds=0 if unknown else o.expected_wait_s,
                capacity_unknown=unknown,
            )
        )
    # Queued jobs per partition: the broker's own queue (jobs this partition's hardware could
    # run) plus jobs sent to the site that have not started yet (pending in Slurm's queue).
    waiting = store.jobs_in_states([JobState.QUEUED, JobState.PROVISIONING])
    for p in resp.partitions:
        p.queued_jobs = sum(
            1
            for job in waiting
            if (job.state == JobState.QUEUED or job.site == p.site) and _fits(job.spec, p.accelerator)
        )


def project_partition_waits(
    resp: pb.GetStatusResponse, planner: Planner, snap: PassSnapshot, store: JobStore
) -> None:
    """Each partition's wait as a new one-unit job there is projected to see it now (the projected
    wait model: running jobs' expected ends at the tenant's learned ratio, the broker's queue ahead),
    as `szb explain` and the dispatcher see it; the backend's own estimate said otherwise."""
    for p in resp.partitions:
        if p.capacity_unknown:
            continue
        one = {"count": 1, "any_of": [p.accelerator]} if p.accelerator else {"count": 0}
        probe = JobSpec.model_validate({"name": "status", "command": ["true"], "runtime_estimate": "1h",
                                        "resources": {"accelerators": one, "cpus": 1}})
        waits = planner.waits.for_job(planner.policy, probe, snap, store, planner.queueing_sites())
        wait = (waits or {}).get(f"{p.site}/{p.partition}")
        if wait is not None:
            p.expected_wait_seconds = min(wait, NEVER_S)


def _add_budgets(
    resp: pb.GetStatusResponse, planner: Planner, now: datetime, store: JobStore, shown: Sequence[str]
) -> list[dict[str, object]]:
    """Budget, budget left and vouchers of each shown tenant (also returned for `status_json`)."""
    tenants: list[dict[str, object]] = []
    for tenant_id in shown:
        money = planner.money(tenant_id, now, store)
        budget = planner.budget(tenant_id)
        alert = budget_alert(planner.policy, tenant_id, money)
        line = pb.TenantBudget(
            tenant=tenant_id, vouchers_left=sum(money.voucher_balances.values()), budget_alert=alert
        )
        if budget is not None:
            line.budget = budget
        if money.budget_left is not None:
            line.budget_left, line.budget_over = left_and_over(money.budget_left)
        resp.tenants.append(line)
        tenants.append(
            {
                "tenant": tenant_id,
                "budget": budget,
                "budget_left": line.budget_left if line.HasField("budget_left") else None,
                "budget_over": line.budget_over,
                "vouchers_left": sum(money.voucher_balances.values()),
                "budget_alert": alert,
            }
        )
    return tenants


def _fits(spec: JobSpec, accelerator: str) -> bool:
    """Could a partition of this accelerator (empty: CPU-only) run the job's hardware request?"""
    wanted = spec.resources.accelerators
    if wanted.count == 0 or not accelerator:
        return wanted.count == 0 and not accelerator
    return not wanted.any_of or normalize(accelerator) in {normalize(a) for a in wanted.any_of}
