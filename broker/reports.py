"""Operator views: this month's spend per tenant and site, and the broker's status."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from broker.api import broker_service_pb2 as pb
from broker.burst import is_onprem
from broker.burst.money import month_of
from broker.model import JobState, TenantId
from broker.planning import Planner
from broker.snapshot import partition_key
from broker.store import JobNotFoundError, JobStore


def spend_report(
    planner: Planner, tenant: TenantId, asked: str, store: JobStore, *, operator: bool = False
) -> pb.GetSpendResponse:
    """This month's spend by tenant and site: tenants see their own; internal tenants and
    operators anyone's (or everyone's with `*`)."""
    policy = planner.policy
    now = planner.clock.now()
    caller = policy.tenant(tenant)
    target = asked or tenant
    if target != tenant and not operator and (caller is None or caller.kind != "internal"):
        raise JobNotFoundError(f"tenant {target!r} not found")
    month = month_of(now)
    entries = store.spend_entries(month, None if target == "*" else TenantId(target))
    lines: dict[tuple[str, str], list[float]] = {}
    for e in entries:
        line = lines.setdefault((e.tenant, e.site), [0.0, 0.0])
        if e.settled:
            line[0] += e.spent
        else:
            line[1] += e.reserved
    resp = pb.GetSpendResponse(
        currency=policy.currency,
        month=month,
        lines=[
            pb.SpendLine(tenant=t, site=site, spent=round(v[0], 2), reserved=round(v[1], 2))
            for (t, site), v in sorted(lines.items())
        ],
    )
    if target != "*":
        money = planner.money(target, now, store)
        resp.budget = planner.budget(target) or 0.0
        resp.budget_left = money.budget_left if money.budget_left is not None else 0.0
        resp.vouchers_left = sum(money.voucher_balances.values())
    return resp


def status_report(planner: Planner, store: JobStore, bursts: Sequence[datetime]) -> pb.GetStatusResponse:
    """Operator view: capacity and waits per partition, jobs by state and site, money."""
    now = planner.clock.now()
    offers, totals = planner.live_offers(now)
    resp = pb.GetStatusResponse(policy_hash=planner.policy_hash)
    seen: set[str] = set()
    for o in offers:
        key = partition_key(o)
        if not is_onprem(planner.policy, o.site) or key in seen:
            continue
        seen.add(key)
        resp.partitions.append(
            pb.PartitionStatus(
                site=o.site,
                partition=o.instance_type,
                accelerator=o.accelerator or "",
                total=totals.get(key, o.count if o.accelerator else int(o.cpus)),
                free=o.free or 0,
                expected_wait_seconds=o.expected_wait_s,
            )
        )
    for state, n in store.count_by_state().items():
        resp.jobs_by_state[state.value] = n
    for job in store.jobs_in_states([JobState.PROVISIONING, JobState.RUNNING]):
        if job.site:
            resp.active_jobs_by_site[job.site] = resp.active_jobs_by_site[job.site] + 1
    hour_ago = now - timedelta(hours=1)
    resp.burst_decisions_last_hour = sum(1 for b in bursts if b >= hour_ago)
    tenants = []
    for t in planner.policy.tenants:
        money = planner.money(t.id, now, store)
        tenants.append(
            {
                "tenant": t.id,
                "budget_left": money.budget_left,
                "vouchers_left": sum(money.voucher_balances.values()),
            }
        )
    resp.status_json = json.dumps(
        {"tenants": tenants, "unhealthy": planner.unhealthy_now(), "currency": planner.policy.currency},
        default=str,
    )
    return resp
