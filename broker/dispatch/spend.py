"""The live broker's side of the money ledger: the store's spend entries fed to `broker.burst.money`.

What a tenant has left is computed by `tenant_money` (the simulator uses the same); this
module reads the month's entries, reserves a burst's cash atomically, and settles it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from broker.burst import estimate_cost, is_onprem
from broker.burst.money import (
    BEIJING,
    Charge,
    TenantMoney,
    budget_alert,
    cents_up,
    drawn_up_to,
    fx_rate,
    month_of,
    monthly_budget,
    settled_split,
    split_cost,
    tenant_money,
    voucher_of,
)
from broker.clock import Clock
from broker.decision import Decision
from broker.model import Attempt, AttemptId, Job, JobId, JobSpec, TenantId
from broker.placement.cost import Draws
from broker.policy import Policy
from broker.store import AuditFilter, JobNotFoundError, JobStore, SpendEntry

log = logging.getLogger(__name__)


def charges(entries: Iterable[SpendEntry], month: str) -> list[Charge]:
    """Spend entries as the ledger counts them in a budget month: what was spent once settled, else
    what is reserved, of each entry its part run in that month (`SpendEntry.in_month`)."""
    out = []
    for e in entries:
        part = e.in_month(month)
        if part > 0:
            cash = (e.spent if e.settled else e.reserved) * part
            out.append(Charge(e.tenant, cash, e.voucher * part, e.voucher_id))
    return out


class SpendLedger:
    """Money left, reservations and settlements of cloud attempts, on the store's spend table."""

    def __init__(self, policy: Callable[[], Policy], clock: Clock) -> None:
        self._policy = policy
        self.clock = clock
        self._specs: dict[AttemptId, JobSpec] = {}  # live cloud attempts' job specs (read once each)
        self._alerted: set[tuple[str, str]] = set()  # (tenant, month) past its budget alert

    def money(self, tenant: str, now: datetime, store: JobStore) -> TenantMoney:
        """The tenant's money this month (budget, global cap and voucher balances left ever), and
        that of each later month the runs reserved reach into (`TenantMoney.ahead`)."""
        policy, month = self._policy(), month_of(now)
        entries = store.spend_entries(month)
        used = store.voucher_used(TenantId(tenant))
        ahead = {}
        # A run reaching a later month began by now, so it is one of this month's entries too.
        for later in sorted({m for e in entries for m in e.months() if m > month}):
            there = tenant_money(policy, tenant, charges(entries, later), used, now)
            ahead[later] = (there.budget_left, there.global_left)
        money = tenant_money(policy, tenant, charges(entries, month), used, now)
        return replace(money, ahead=ahead)

    def budget(self, tenant: str) -> float | None:
        return monthly_budget(self._policy(), tenant)

    def cap_used(self, now: datetime, store: JobStore) -> float:
        """Every tenant's cash spent and reserved this month: what the global burst cap counts."""
        month = month_of(now)
        return sum(c.cash for c in charges(store.spend_entries(month), month))

    def reserve(self, job: Job, attempt: Attempt, decision: Decision, store: JobStore) -> bool:
        """Reserve a burst's estimated cash atomically; False when a budget would be exceeded."""
        policy = self._policy()
        # The attempt's own month: settling looks there. A second clock read could fall after
        # Beijing midnight on the 1st, file the entry under the next month, and leave the
        # estimate reserved for good.
        now = attempt.created_at
        cash, voucher = decision.facts.cash or 0.0, decision.facts.voucher or 0.0
        # The split again on today's balances: the voucher the decision drew on may be spent by
        # now (another burst settled meanwhile), and another one pays only at its own discount.
        # Reserved at the decision's split, settling would bill the difference past the budget.
        run = (now, now + job.spec.runtime_estimate)
        balances = self.money(job.tenant, now, store).voucher_balances
        split = split_cost(job.tenant, attempt.site, cash + voucher, policy, balances, run)
        if split.voucher < voucher - 0.005:  # (as decided, give or take a cent: its split stands)
            cash, voucher = cents_up(cash + voucher - split.voucher), split.voucher
        draws = drawn_up_to(split.draws, voucher)
        if (paid := sum(p for _, p in draws)) < voucher:  # (less than a cent: the cash stays whole cents)
            cash, voucher = cents_up(cash + voucher - paid), paid
        entry = SpendEntry(
            tenant=job.tenant,
            site=attempt.site,
            job_id=job.id,
            attempt_id=attempt.id,
            month=month_of(now),
            reserved=cash,
            voucher=voucher,
            voucher_id=draws[0][0] if draws else None,
            fx=fx_rate(policy, attempt.offer),  # settled at it, whatever a reload sets meanwhile
            draws=draws,
            started=now,  # its money is counted in each budget month for the part it runs in
            ends=now + job.spec.runtime_estimate,
        )
        drawn_on = (voucher_of(policy, job.tenant, vid) for vid, _ in draws)
        reserved = store.reserve_spend(
            entry,
            tenant_limit=self.budget(job.tenant),
            global_limit=policy.burst.budget.global_monthly_cap,
            voucher_balances={v.id: v.balance for v in drawn_on if v is not None},
        )
        if reserved:
            self.alert(job.tenant, job.id, store)
        return reserved

    def accrue(self, live: Sequence[Attempt], store: JobStore) -> None:
        """A cloud attempt running past its estimate reserves what it has cost so far, split between
        cash and voucher as settling would, so the month's money (budget, global cap, `szb spend`)
        counts what it has really run up, and no burst is made on money it has already spent."""
        policy, now = self._policy(), self.clock.now()
        costs: list[tuple[AttemptId, float, float]] = []
        specs: dict[AttemptId, JobSpec] = {}
        for attempt in live:
            if attempt.backend_id is None or is_onprem(policy, attempt.site):
                continue
            spec = self._specs.get(attempt.id)
            if spec is None:
                try:
                    spec = store.get(attempt.job_id).spec
                except JobNotFoundError:
                    continue
            specs[attempt.id] = spec
            hours = max(0.0, (now - attempt.created_at).total_seconds()) / 3600
            if hours * 3600 > spec.runtime_estimate.total_seconds():  # within it, its reservation covers it
                cost = estimate_cost(spec, attempt.offer, policy, hours=hours, rate=1.0)
                costs.append((attempt.id, cost, fx_rate(policy, attempt.offer) or 0.0))
        self._specs = specs

        started = {a.id: a.created_at for a in live}

        def split(entry: SpendEntry, total: float, others: Mapping[str, float]) -> tuple[float, Draws]:
            # What settling now would split (`settle`): the vouchers pay their share of the run so far.
            run = (started.get(entry.attempt_id, now), now)
            return settled_split(policy, entry.tenant, entry.site, total, others, run)

        store.raise_reservations(costs, split, now)
        if costs:  # a run past its estimate may take its tenant past the alert
            raised = {c[0] for c in costs}
            for e in store.spend_entries(month_of(now)):
                if e.attempt_id in raised:
                    self.alert(e.tenant, e.job_id, store)

    def alert(self, tenant: str, job_id: JobId, store: JobStore) -> None:
        """Log (and record on `job_id`, for the audit trail) the first time in a month that the
        tenant's spend and reservations reach `burst.budget.alert_fraction` of its budget."""
        policy, now = self._policy(), self.clock.now()
        month = month_of(now)
        if (tenant, month) in self._alerted:
            return
        money = self.money(tenant, now, store)
        budget = self.budget(tenant)
        if budget is None or money.budget_left is None or not budget_alert(policy, tenant, money):
            return
        self._alerted.add((tenant, month))
        if _alerted_before(tenant, month, now, store):  # by an earlier run of the broker
            return
        used, fraction = round(budget - money.budget_left, 2), policy.burst.budget.alert_fraction
        said = (
            f"budget alert: tenant {tenant} has spent and reserved {used:,.2f} of its {budget:,.2f} "
            f"{policy.currency} budget this month ({used / budget:.0%}; alert at {fraction:.0%})"
        )
        log.warning(
            said,
            extra={
                "event": "budget_alert",
                "tenant": tenant,
                "job_id": job_id,
                "used": used,
                "budget": budget,
                "alert_fraction": fraction,
                "currency": policy.currency,
            },
        )
        data = {"alert": True, "month": month, "used": used, "budget": budget, "alert_fraction": fraction}
        store.record(job_id, now, kind="budget", message=said, data={**data, "currency": policy.currency})

    def settle(
        self, job: Job, attempt: Attempt, store: JobStore, *, ran: bool = True, ended: datetime | None = None
    ) -> None:
        """Actual spend = the price recorded at decision time × the attempt's actual runtime (until
        `ended`, default now), at the exchange rate of its reservation; nothing when no instance
        ever ran (`ran` False)."""
        policy = self._policy()
        if is_onprem(policy, attempt.site):
            return
        entries = [
            e
            for e in store.spend_entries(month_of(attempt.created_at), job.tenant)
            if e.attempt_id == attempt.id
        ]
        if not entries:
            return
        reserved = entries[0]
        end = min(ended, self.clock.now()) if ended else self.clock.now()  # (a skewed clock)
        hours = max(0.0, (end - attempt.created_at).total_seconds()) / 3600 if ran else 0.0
        total = estimate_cost(job.spec, attempt.offer, policy, hours=hours, rate=reserved.fx)
        # The vouchers pay their share of what the attempt really cost, each up to what is left
        # of it besides this attempt's own draw: a run past its estimate may exhaust one, and
        # the next pays on before cash.
        others = store.voucher_used(job.tenant)
        for vid, paid in reserved.voucher_draws():
            others[vid] = others.get(vid, 0.0) - paid
        run = (attempt.created_at, end)  # a voucher pays for none of it after it expires
        cash, draws = settled_split(policy, job.tenant, attempt.site, total, others, run)
        ran_to = end if ran else attempt.created_at  # (no run: all of it where it began)
        voucher = sum(p for _, p in draws)
        store.settle_spend(attempt.id, spent=cash, voucher=voucher, draws=draws, ended=ran_to)


def _alerted_before(tenant: str, month: str, now: datetime, store: JobStore) -> bool:
    """The audit trail already has the tenant's budget alert of `month` (the broker restarted)."""
    start = now.astimezone(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    events = store.audit_events(AuditFilter(tenant=tenant, since=start, limit=100_000))
    return any(e.kind == "budget" and e.data.get("alert") and e.data.get("month") == month for _, e in events)
