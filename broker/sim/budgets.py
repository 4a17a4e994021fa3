"""Tenants' monthly budgets and the global cap, for the references (the LP bound, the offline schedule).

A strategy bursts a job only when its cash share fits what is left of the tenant's budget for
the month and of the global cap (`broker.sim.backends.Ledger`, the live arithmetic). The LP gets
one row per tenant and budget month (and one per month for the cap) over the jobs whose every
on-time launch falls in that month; the offline schedule keeps its own running spend (`Purse`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.burst.money import BEIJING, month_of, monthly_budget, split_cost
from broker.placement.cost import Draws
from broker.policy import Policy
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob

SLACK = 1e-6
"""Relative room on each limit (the strategies refuse above limit + 1e-9)."""

MAX_MONTHS = 24
"""How many budget months ahead the offline schedule looks for one that can pay a cloud-only job."""


@dataclass(frozen=True)
class CashRow:
    """At most `limit` cash over `jobs`: (job index, the least cash its on-time cloud run counts)."""

    limit: float
    jobs: tuple[tuple[int, float], ...]


def cash_rows(
    jobs: Sequence[SimJob], facts: Sequence[JobFacts], policy: Policy, interrupted: Callable[[str], bool]
) -> list[CashRow]:
    """The LP's budget rows, each a relaxation of every run within the budgets (no violation): a job
    counts in a month only when [arrival, arrival + max_wait] (where an on-time run launches) lies
    in it, at its least cloud bill (actual runtime, spot never interrupted); vouchers may pay their
    whole balance in any month. A job that may run spot where the world interrupts spot is left
    out: its relaunch may be billed in a later month."""
    vouchers = {t.id: sum(v.balance for v in t.vouchers) for t in policy.tenants}
    tenants: dict[tuple[str, str], list[tuple[int, float]]] = {}
    months: dict[str, list[tuple[int, float]]] = {}
    for i, (j, f) in enumerate(zip(jobs, facts, strict=True)):
        floor = f.cloud_cost if f.cloud_floor is None else f.cloud_floor
        spot = (*f.cloud_by_cost, *f.over_limit_spot)  # (the latter: what a short estimate may take)
        if floor is None or any(o.spot and interrupted(str(o.site)) for o in spot):
            continue
        first, last = month_of(j.created_at), month_of(j.created_at + timedelta(seconds=j.max_wait_s))
        if first != last:
            continue
        tenants.setdefault((str(j.tenant), first), []).append((i, floor))
        months.setdefault(first, []).append((i, floor))
    rows: list[CashRow] = []
    for (tenant, _), members in sorted(tenants.items()):
        budget = monthly_budget(policy, tenant)
        if budget is not None:
            _row(rows, budget + vouchers.get(tenant, 0.0), members)
    cap = policy.burst.budget.global_monthly_cap
    if cap is not None:
        for _, members in sorted(months.items()):
            _row(rows, cap + sum(vouchers.values()), members)
    return rows


def _row(rows: list[CashRow], limit: float, members: list[tuple[int, float]]) -> None:
    """Add the row unless it cannot bind (all its bursts together fit): a slack row leaves the bound
    as it is but may move the LP to another optimal vertex, whose duals price the offline schedule."""
    if sum(least for _, least in members) > limit:
        rows.append(CashRow(limit + SLACK * max(1.0, abs(limit)), tuple(members)))


@dataclass
class Purse:
    """The offline schedule's cash per tenant and budget month and per month (the global cap), and
    what each voucher has paid, booked as the ledger splits a burst (`split_cost`)."""

    policy: Policy
    cash: dict[tuple[str, str], float] = field(default_factory=dict)
    month_cash: dict[str, float] = field(default_factory=dict)
    voucher_used: dict[str, float] = field(default_factory=dict)
    paid: dict[int, tuple[str, str, float]] = field(default_factory=dict)
    """Job index -> (tenant, month, cash) of each burst booked."""

    def pay(self, i: int, job: SimJob, f: JobFacts, at_s: float) -> bool:
        """Book job `i`'s cloud run launched at simulated second `at_s` if its budget month and the
        cap can pay its cash share (False: nothing booked)."""
        tenant = str(job.tenant)
        start = job.epoch + timedelta(seconds=at_s)
        month = month_of(start)
        cash, draws = self._split(job, f, (start, start + timedelta(seconds=job.runtime_s)))
        budget = monthly_budget(self.policy, tenant)
        cap = self.policy.burst.budget.global_monthly_cap
        mine, everyone = self.cash.get((tenant, month), 0.0) + cash, self.month_cash.get(month, 0.0) + cash
        if (budget is not None and mine > budget + 1e-9) or (cap is not None and everyone > cap + 1e-9):
            return False
        self.cash[(tenant, month)], self.month_cash[month] = mine, everyone
        for vid, paid in draws:
            self.voucher_used[vid] = self.voucher_used.get(vid, 0.0) + paid
        self.paid[i] = (tenant, month, cash)
        return True

    def pay_later(self, i: int, job: SimJob, f: JobFacts) -> float | None:
        """The first second of the first later budget month that can pay job `i`'s burst, booked
        (None: none of the next `MAX_MONTHS` can)."""
        at = job.created_at.astimezone(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for _ in range(MAX_MONTHS):
            at = (at + timedelta(days=32)).replace(day=1)
            at_s = (at - job.epoch).total_seconds()
            if self.pay(i, job, f, at_s):
                return at_s
        return None

    def holds(self, jobs: Sequence[SimJob], facts: Sequence[JobFacts], cloud: Sequence[int]) -> bool:
        """Whether bursting just `cloud` keeps within every limit: each as this purse booked it, a
        job it did not book at its arrival with no voucher (a re-decided schedule's check)."""
        other = Purse(self.policy)
        for i in cloud:
            unbooked = (str(jobs[i].tenant), month_of(jobs[i].created_at), facts[i].cloud_cost or 0.0)
            tenant, month, cash = self.paid.get(i) or unbooked
            other.cash[(tenant, month)] = other.cash.get((tenant, month), 0.0) + cash
            other.month_cash[month] = other.month_cash.get(month, 0.0) + cash
        cap = self.policy.burst.budget.global_monthly_cap
        for (tenant, _), cash in other.cash.items():
            budget = monthly_budget(self.policy, tenant)
            if budget is not None and cash > budget + 1e-9:
                return False
        return cap is None or all(v <= cap + 1e-9 for v in other.month_cash.values())

    def _split(
        self, job: SimJob, f: JobFacts, run: tuple[datetime, datetime]
    ) -> tuple[float, Draws]:
        """(cash, voucher draws) of the job's cheapest cloud run (its expected cost)."""
        total = f.cloud_cost or 0.0
        offer = f.cloud_by_cost[0] if f.cloud_by_cost else None
        tenant = self.policy.tenant(str(job.tenant))
        if offer is None or tenant is None or not tenant.vouchers:
            return total, ()
        balances = {v.id: max(0.0, v.balance - self.voucher_used.get(v.id, 0.0)) for v in tenant.vouchers}
        got = split_cost(str(job.tenant), str(offer.site), total, self.policy, balances, run)
        return got.cash, got.draws

