"""Attempts and money in the SQL store: write before you act, and never overspend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from broker.model import Attempt, AttemptId, AttemptState, JobEvent, JobId, Offer, SiteId, TenantId
from broker.store._dialect import Db, marks
from broker.store._rows import LIVE_ATTEMPT_STATES, attempt_updates, new_attempt_id
from broker.store._schema import ATTEMPT_COLS, SPEND_COLS
from broker.store._sql_jobs import SqlJobs
from broker.store.base import Draws, JobMove, JobNotFoundError, SpendEntry, SplitCost, StoreError
from broker.voucher_time import month_span

# The entries whose money counts in a budget month: filed under it, or with a run reaching into it.
_IN_MONTH = "WHERE (spend.month = ? OR (spend.started IS NOT NULL AND spend.started < ? AND spend.ends > ?))"
# What the tenant's other entries drew from a voucher, reserved or settled, in every month.
_VOUCHER_DRAWN = (
    "SELECT COALESCE(SUM(amount), 0) FROM spend_draws WHERE tenant = ? AND voucher_id = ? AND attempt_id <> ?"
)
_VOUCHERS_DRAWN = (
    "SELECT voucher_id, SUM(amount) FROM spend_draws WHERE tenant = ? AND attempt_id <> ? GROUP BY voucher_id"
)
# An open reservation grows to what its attempt has cost so far (its cash never lowered).
_RAISE_RESERVED = (
    "UPDATE spend SET reserved = ?, voucher = ?, voucher_id = ? WHERE attempt_id = ? AND NOT settled"
)
# ... and its run to now, so its money is counted in the months it has really run in.
_RAISE_ENDS = "UPDATE spend SET ends = ? WHERE attempt_id = ? AND NOT settled AND ends < ?"
_DRAWS = (
    "SELECT d.attempt_id, d.voucher_id, d.amount FROM spend_draws d "
    "JOIN spend ON spend.attempt_id = d.attempt_id"
)
_UPSERT_SPEND = (
    f"INSERT INTO spend ({SPEND_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (attempt_id) DO UPDATE SET tenant = excluded.tenant, site = excluded.site, "
    "job_id = excluded.job_id, month = excluded.month, reserved = excluded.reserved, "
    "spent = excluded.spent, voucher = excluded.voucher, settled = excluded.settled, "
    "voucher_id = excluded.voucher_id, fx = excluded.fx, started = excluded.started, ends = excluded.ends"
)


class SqlAttempts(SqlJobs):
    """The attempt and money half of the store contract."""

    def create_attempt(
        self,
        job_id: JobId,
        site: SiteId,
        offer: Offer,
        token: str,
        now: datetime,
        *,
        secret_hash: str = "",
    ) -> Attempt:
        ts = self._dialect.ts(now)
        with self._tx(fenced=True) as db:
            row = db.one(
                "UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE id = ? RETURNING attempts",
                (ts, job_id),
            )
            if row is None:
                raise JobNotFoundError(f"job {job_id!r} not found")
            number: int = row[0]
            attempt_id = new_attempt_id(job_id, number)
            db.run(
                f"INSERT INTO attempts ({ATTEMPT_COLS}, epoch) VALUES ({marks(13)})",
                (
                    attempt_id,
                    job_id,
                    number,
                    site,
                    offer.model_dump_json(),
                    token,
                    AttemptState.PENDING.value,
                    None,
                    ts,
                    ts,
                    "",
                    secret_hash,
                    self._fence,
                ),
            )
        return Attempt(
            id=attempt_id,
            job_id=job_id,
            number=number,
            site=site,
            offer=offer,
            token=token,
            created_at=now,
            updated_at=now,
            secret_hash=secret_hash,
        )

    def update_attempt(
        self,
        attempt_id: AttemptId,
        now: datetime,
        *,
        state: AttemptState | None = None,
        backend_id: str | None = None,
        error: str | None = None,
        secret_hash: str | None = None,
        moves: Sequence[JobMove] = (),
    ) -> Attempt:
        # An unfenced update (an agent's report) keeps the epoch of the leader that wrote last.
        sets = ["updated_at = ?", "epoch = COALESCE(?, epoch)"]
        params: list[Any] = [self._dialect.ts(now), self._fence]
        for col, value in attempt_updates(state, backend_id, error, secret_hash):
            sets.append(f"{col} = ?")
            params.append(value)
        guard = " AND state IN (?, ?)" if state is not None else ""
        events: list[JobEvent] = []
        with self._tx(fenced=True) as db:
            row = db.one(
                f"UPDATE attempts SET {', '.join(sets)} WHERE id = ?{guard} RETURNING {ATTEMPT_COLS}",
                [*params, attempt_id, *(LIVE_ATTEMPT_STATES if guard else ())],
            )
            if row is None and guard:  # terminal already: keep it as it is, and its job too
                row = db.one(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE id = ?", (attempt_id,))
                moves = ()
            if row is None:
                raise StoreError(f"attempt {attempt_id!r} not found")
            for move in moves:
                job_id = JobId(row[1])
                current = self._lock_state(db, job_id)
                if current.terminal:
                    break
                event = self._move(db, job_id, current, now, move)
                if event is not None:
                    events.append(event)
        self._publish(events)
        return self._row_to_attempt(row)

    def get_attempt(self, attempt_id: str) -> Attempt:
        row = self._one(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE id = ?", (attempt_id,))
        if row is None:
            raise StoreError(f"attempt {attempt_id!r} not found")
        return self._row_to_attempt(row)

    def attempts_for(self, job_id: JobId) -> list[Attempt]:
        rows = self._all(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE job_id = ? ORDER BY number", (job_id,))
        return [self._row_to_attempt(r) for r in rows]

    def live_attempts(self) -> list[Attempt]:
        rows = self._all(
            f"SELECT {ATTEMPT_COLS} FROM attempts WHERE state IN (?, ?) ORDER BY id", LIVE_ATTEMPT_STATES
        )
        return [self._row_to_attempt(r) for r in rows]

    # Money --------------------------------------------------------------------------------

    def reserve_spend(
        self,
        entry: SpendEntry,
        *,
        tenant_limit: float | None,
        global_limit: float | None,
        voucher_balances: Mapping[str, float] | None = None,
    ) -> bool:
        with self._tx(fenced=True) as db:
            for month in entry.months():  # (in order: no two wait on each other)
                self._dialect.lock_month(db, month)
            draws = entry.voucher_draws()
            if voucher_balances is not None and draws:
                balances = voucher_balances
                draws = tuple((v, self._payable(db, entry, v, paid, balances.get(v))) for v, paid in draws)
                paid = sum(p for _, p in draws)
                entry = replace(entry, reserved=entry.reserved + entry.voucher - paid, voucher=paid)
            # A reservation of no cash (a voucher pays all) breaks no limit, even one already overrun.
            if entry.reserved > 0 and not self._within(db, entry, tenant_limit, global_limit):
                return False
            dt = self._dialect.ts
            db.run(
                _UPSERT_SPEND,
                (
                    entry.tenant,
                    entry.site,
                    entry.job_id,
                    entry.attempt_id,
                    entry.month,
                    entry.reserved,
                    entry.spent,
                    entry.voucher,
                    entry.settled,
                    entry.voucher_id,
                    entry.fx,
                    None if entry.started is None else dt(entry.started),
                    None if entry.ends is None else dt(entry.ends),
                ),
            )
            _write_draws(db, entry.attempt_id, entry.tenant, draws)
        return True

    def _within(
        self, db: Db, entry: SpendEntry, tenant_limit: float | None, global_limit: float | None
    ) -> bool:
        """Each budget month the entry's run touches keeps the tenant's and everyone's cash (spent,
        else reserved) within the limits, counting each entry's part in that month."""
        for month in entry.months():
            part = entry.reserved * entry.in_month(month)
            if part <= 0:
                continue
            there = self._entries(db, *self._in_month(month))
            cash = [
                ((e.spent if e.settled else e.reserved) * e.in_month(month), e.tenant)
                for e in there
                if e.attempt_id != entry.attempt_id
            ]
            mine = sum(c for c, t in cash if t == entry.tenant)
            if tenant_limit is not None and mine + part > tenant_limit + 1e-9:
                return False
            if global_limit is not None and sum(c for c, _ in cash) + part > global_limit + 1e-9:
                return False
        return True

    def _in_month(self, month: str) -> tuple[str, list[Any]]:
        """The `where` and parameters of the entries counted in `month` (`_IN_MONTH`)."""
        start, end = month_span(month)
        return _IN_MONTH, [month, self._dialect.ts(end), self._dialect.ts(start)]

    @staticmethod
    def _payable(db: Db, entry: SpendEntry, voucher_id: str, amount: float, balance: float | None) -> float:
        """What of `amount` the voucher can pay: what the tenant's other entries left of `balance`."""
        if balance is None:
            return amount
        row = db.one(_VOUCHER_DRAWN, (entry.tenant, voucher_id, entry.attempt_id))
        return max(0.0, min(amount, balance - (row[0] if row else 0.0)))

    def settle_spend(
        self, attempt_id: AttemptId, spent: float, voucher: float, draws: Draws | None = None,
        ended: datetime | None = None,
    ) -> None:
        with self._tx(fenced=True) as db:
            found = self._entries(db, "WHERE spend.attempt_id = ?", [attempt_id])
            if not found:
                return
            entry = found[0]
            settled = entry if ended is None or entry.started is None else replace(entry, ends=ended)
            for month in sorted({*entry.months(), *settled.months()}):
                self._dialect.lock_month(db, month)
            if draws is None:  # its first voucher pays it all
                draws = () if entry.voucher_id is None else ((entry.voucher_id, voucher),)
            ends = None if settled.ends is None else self._dialect.ts(settled.ends)
            db.run(
                "UPDATE spend SET spent = ?, voucher = ?, settled = TRUE, ends = ? WHERE attempt_id = ?",
                (spent, voucher, ends, attempt_id),
            )
            _write_draws(db, attempt_id, entry.tenant, draws)

    def raise_reservations(
        self, costs: Sequence[tuple[AttemptId, float, float]], split: SplitCost, now: datetime | None = None
    ) -> None:
        if not costs:
            return
        with self._tx(fenced=True) as db:
            marked = marks(len(costs))
            where = f"WHERE NOT settled AND spend.attempt_id IN ({marked})"
            ids = [c[0] for c in costs]
            entries = {e.attempt_id: e for e in self._entries(db, where, ids)}
            months = {m for e in entries.values() for m in e.months()}
            if now is not None:  # (its run reaches now: the months to now are written too)
                months |= {m for e in entries.values() if e.ends for m in replace(e, ends=now).months()}
            for month in sorted(months):  # one order: no two wait on each other
                self._dialect.lock_month(db, month)
            for attempt, cost, rate in costs:
                if (entry := entries.get(attempt)) is None:
                    continue
                # Split as settling will: the vouchers' share grows with the run, within what the
                # tenant's other entries left of each, so only the tenant's own cash is counted.
                others = {r[0]: float(r[1]) for r in db.all(_VOUCHERS_DRAWN, (entry.tenant, attempt))}
                total = cost * (rate if entry.fx is None else entry.fx)
                cash, draws = split(entry, total, others)
                voucher = sum(p for _, p in draws)
                if cash > entry.reserved or voucher > entry.voucher:  # (a whole voucher: no cash)
                    first = draws[0][0] if draws else entry.voucher_id
                    db.run(_RAISE_RESERVED, (max(cash, entry.reserved), voucher, first, attempt))
                    _write_draws(db, attempt, entry.tenant, draws)
                if now is not None:
                    db.run(_RAISE_ENDS, (self._dialect.ts(now), attempt, self._dialect.ts(now)))

    def voucher_used(self, tenant: TenantId) -> dict[str, float]:
        rows = self._all(
            "SELECT voucher_id, SUM(amount) FROM spend_draws WHERE tenant = ? GROUP BY voucher_id", [tenant]
        )
        return {r[0]: float(r[1]) for r in rows}

    def spend_entries(self, month: str, tenant: TenantId | None = None) -> list[SpendEntry]:
        where, params = self._in_month(month)
        if tenant is not None:
            where += " AND spend.tenant = ?"
            params.append(tenant)
        return self._reading(lambda db: self._entries(db, where, params))

    def unsettled_spend(self) -> list[SpendEntry]:
        return self._reading(lambda db: self._entries(db, "WHERE NOT settled", []))

    def _entries(self, db: Db, where: str, params: Sequence[Any]) -> list[SpendEntry]:
        """The spend entries `where` picks, ordered by attempt, with their voucher draws."""
        cols = ", ".join(f"spend.{c.strip()}" for c in SPEND_COLS.split(","))
        rows = db.all(f"SELECT {cols} FROM spend {where} ORDER BY spend.attempt_id", params)
        dt = self._dialect.dt
        entries = [
            self._spend_entry(r, None if r[11] is None else dt(r[11]), None if r[12] is None else dt(r[12]))
            for r in rows
        ]
        if not any(e.voucher_id is not None for e in entries):
            return entries
        draws: dict[str, list[tuple[str, float]]] = {}
        for r in db.all(f"{_DRAWS} {where} ORDER BY d.attempt_id, d.ord", params):
            draws.setdefault(r[0], []).append((r[1], float(r[2])))
        # An entry its first voucher paid all of reads as it was written (`voucher_draws` alike).
        got = ((e, tuple(draws.get(e.attempt_id, ()))) for e in entries)
        return [e if d == e.voucher_draws() else replace(e, draws=d) for e, d in got]

    @staticmethod
    def _spend_entry(r: Sequence[Any], started: datetime | None, ends: datetime | None) -> SpendEntry:
        return SpendEntry(
            tenant=TenantId(r[0]),
            site=SiteId(r[1]),
            job_id=JobId(r[2]),
            attempt_id=AttemptId(r[3]),
            month=r[4],
            reserved=r[5],
            spent=r[6],
            voucher=r[7],
            settled=bool(r[8]),
            voucher_id=r[9],
            fx=r[10],
            started=started,
            ends=ends,
        )


def _write_draws(db: Db, attempt_id: str, tenant: str, draws: Draws) -> None:
    """Replace what each voucher pays of the attempt (`spend_draws`)."""
    db.run("DELETE FROM spend_draws WHERE attempt_id = ?", (attempt_id,))
    for i, (vid, amount) in enumerate(draws):
        db.run(
            "INSERT INTO spend_draws (attempt_id, ord, voucher_id, tenant, amount) VALUES (?, ?, ?, ?, ?)",
            (attempt_id, i, vid, tenant, amount),
        )
