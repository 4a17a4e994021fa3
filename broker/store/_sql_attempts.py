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

_SPEND_TOTAL = (
    "SELECT COALESCE(SUM(CASE WHEN settled THEN spent ELSE reserved END), 0) FROM spend WHERE month = ?"
)
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
_DRAWS = (
    "SELECT d.attempt_id, d.voucher_id, d.amount FROM spend_draws d "
    "JOIN spend ON spend.attempt_id = d.attempt_id"
)
_UPSERT_SPEND = (
    f"INSERT INTO spend ({SPEND_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (attempt_id) DO UPDATE SET tenant = excluded.tenant, site = excluded.site, "
    "job_id = excluded.job_id, month = excluded.month, reserved = excluded.reserved, "
    "spent = excluded.spent, voucher = excluded.voucher, settled = excluded.settled, "
    "voucher_id = excluded.voucher_id, fx = excluded.fx"
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
            self._dialect.lock_month(db, entry.month)
            draws = entry.voucher_draws()
            if voucher_balances is not None and draws:
                balances = voucher_balances
                draws = tuple((v, self._payable(db, entry, v, paid, balances.get(v))) for v, paid in draws)
                paid = sum(p for _, p in draws)
                entry = replace(entry, reserved=entry.reserved + entry.voucher - paid, voucher=paid)
            # A reservation of no cash (a voucher pays all) breaks no limit, even one already overrun.
            if tenant_limit is not None and entry.reserved > 0:
                row = db.one(_SPEND_TOTAL + " AND tenant = ?", (entry.month, entry.tenant))
                if row is None or row[0] + entry.reserved > tenant_limit + 1e-9:
                    return False
            if global_limit is not None and entry.reserved > 0:
                row = db.one(_SPEND_TOTAL, (entry.month,))
                if row is None or row[0] + entry.reserved > global_limit + 1e-9:
                    return False
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
                ),
            )
            _write_draws(db, entry.attempt_id, entry.tenant, draws)
        return True

    @staticmethod
    def _payable(db: Db, entry: SpendEntry, voucher_id: str, amount: float, balance: float | None) -> float:
        """What of `amount` the voucher can pay: what the tenant's other entries left of `balance`."""
        if balance is None:
            return amount
        row = db.one(_VOUCHER_DRAWN, (entry.tenant, voucher_id, entry.attempt_id))
        return max(0.0, min(amount, balance - (row[0] if row else 0.0)))

    def settle_spend(
        self, attempt_id: AttemptId, spent: float, voucher: float, draws: Draws | None = None
    ) -> None:
        with self._tx(fenced=True) as db:
            row = db.one("SELECT month, tenant, voucher_id FROM spend WHERE attempt_id = ?", (attempt_id,))
            if row is None:
                return
            self._dialect.lock_month(db, row[0])
            if draws is None:  # its first voucher pays it all
                draws = () if row[2] is None else ((row[2], voucher),)
            db.run(
                "UPDATE spend SET spent = ?, voucher = ?, settled = TRUE WHERE attempt_id = ?",
                (spent, voucher, attempt_id),
            )
            _write_draws(db, attempt_id, row[1], draws)

    def raise_reservations(self, costs: Sequence[tuple[AttemptId, float, float]], split: SplitCost) -> None:
        if not costs:
            return
        with self._tx(fenced=True) as db:
            marked = marks(len(costs))
            where = f"WHERE NOT settled AND spend.attempt_id IN ({marked})"
            ids = [c[0] for c in costs]
            entries = {e.attempt_id: e for e in self._entries(db, where, ids)}
            for month in sorted({e.month for e in entries.values()}):  # one order: no two wait on each other
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

    def voucher_used(self, tenant: TenantId) -> dict[str, float]:
        rows = self._all(
            "SELECT voucher_id, SUM(amount) FROM spend_draws WHERE tenant = ? GROUP BY voucher_id", [tenant]
        )
        return {r[0]: float(r[1]) for r in rows}

    def spend_entries(self, month: str, tenant: TenantId | None = None) -> list[SpendEntry]:
        where = "WHERE month = ?"
        params: list[Any] = [month]
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
        entries = [self._spend_entry(r) for r in rows]
        if not any(e.voucher_id is not None for e in entries):
            return entries
        draws: dict[str, list[tuple[str, float]]] = {}
        for r in db.all(f"{_DRAWS} {where} ORDER BY d.attempt_id, d.ord", params):
            draws.setdefault(r[0], []).append((r[1], float(r[2])))
        # An entry its first voucher paid all of reads as it was written (`voucher_draws` alike).
        got = ((e, tuple(draws.get(e.attempt_id, ()))) for e in entries)
        return [e if d == e.voucher_draws() else replace(e, draws=d) for e, d in got]

    @staticmethod
    def _spend_entry(r: Sequence[Any]) -> SpendEntry:
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
        )


def _write_draws(db: Db, attempt_id: str, tenant: str, draws: Draws) -> None:
    """Replace what each voucher pays of the attempt (`spend_draws`)."""
    db.run("DELETE FROM spend_draws WHERE attempt_id = ?", (attempt_id,))
    for i, (vid, amount) in enumerate(draws):
        db.run(
            "INSERT INTO spend_draws (attempt_id, ord, voucher_id, tenant, amount) VALUES (?, ?, ?, ?, ?)",
            (attempt_id, i, vid, tenant, amount),
        )
