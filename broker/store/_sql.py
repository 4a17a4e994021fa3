"""The one SQL store, over a dialect: SQLite and PostgreSQL share every query.

Its parts: `_sql_core` (connection, transactions, fencing, rows), `_sql_jobs` (jobs and
events), `_sql_attempts` (attempts and money), `_sql_runs` (run history); this module adds
the audit trail and the scheduler leadership lease. Where SQLite relies on its single
writer, PostgreSQL takes row locks (`FOR UPDATE`, the `last_seq` counter) or a per-month
advisory lock, so several broker processes may share one database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from secrets import token_hex

from broker.model import Job, JobEvent, JobId, TenantId
from broker.store import _audit, _cancels, _drains, _refused_actions
from broker.store._audit import KEEP_REFUSALS, AuditFilter, PolicyVersion, RefusedSubmission, TokenSet
from broker.store._cancels import CancelRequest
from broker.store._drains import DRAINED, UNDRAINED, DrainChange, SiteDrain
from broker.store._refused_actions import RefusedAction
from broker.store._sql_attempts import SqlAttempts
from broker.store._sql_runs import SqlRuns
from broker.store.base import FairUsage, LeaseBlocked, LeaseRow, ReclaimBooking, ReclaimState, StoreError

LEGACY_BROKER_ID = "shangzhuang"
"""The one broker id of every store before each store made its own (`adapters._tags`)."""

_BOOKED = "attempt_id, partition_id, units, for_job, since_s, until_s, stopped, beside"


class SqlStore(SqlAttempts, SqlRuns):
    """The store contract on one SQL database; `SqliteStore` and `PostgresStore` only connect."""

    # Audit trail ---------------------------------------------------------------------------

    def record_policy_version(self, version: PolicyVersion) -> None:
        with self._tx() as db:
            self._dialect.lock_history(db)  # HA processes loading one file at once: one entry
            db.run(_audit.INSERT_POLICY, _audit.policy_row(version, self._dialect.ts))

    def policy_versions(self, limit: int = 50) -> list[PolicyVersion]:
        rows = self._all(_audit.LIST_POLICIES, (limit,))
        return [_audit.policy_from_row(r, self._dialect.dt) for r in rows]

    def find_policy_version(self, hash_prefix: str) -> PolicyVersion | None:
        row = self._one(_audit.FIND_POLICY, _audit.prefix_range(hash_prefix))
        return None if row is None else _audit.policy_from_row(row, self._dialect.dt)

    def policy_hashes(self, hash_prefix: str, limit: int) -> list[str]:
        rows = self._all(_audit.POLICY_HASHES, (*_audit.prefix_range(hash_prefix), limit))
        return [str(r[0]) for r in rows]

    def audit_events(self, where: AuditFilter) -> list[tuple[TenantId, JobEvent]]:
        sql, params = _audit.audit_query(where, self._dialect.ts)
        return _audit.audit_from_rows(self._all(sql, params), self._dialect.dt)

    def record_refusals(self, refusals: Sequence[RefusedSubmission], keep: int = KEEP_REFUSALS) -> None:
        if not refusals:
            return
        with self._tx() as db:
            db.many(_audit.INSERT_REFUSAL, [_audit.refusal_row(r, self._dialect.ts) for r in refusals])
            for tenant in sorted({r.tenant for r in refusals}):
                db.run(_audit.PRUNE_REFUSALS, (tenant, tenant, keep))

    def refusals(self, where: AuditFilter) -> list[RefusedSubmission]:
        sql, params = _audit.refusal_query(where, self._dialect.ts)
        return _audit.refusals_from_rows(self._all(sql, params), self._dialect.dt)

    def record_refused_action(self, action: RefusedAction) -> None:
        with self._tx() as db:
            db.run(_refused_actions.INSERT, _refused_actions.row(action, self._dialect.ts))

    def refused_actions(self, where: AuditFilter) -> list[RefusedAction]:
        sql, params = _refused_actions.query(where, self._dialect.ts)
        return _refused_actions.from_rows(self._all(sql, params), self._dialect.dt)

    def record_token_set(self, tokens: TokenSet) -> None:
        with self._tx() as db:
            self._dialect.lock_history(db)  # HA processes reading one file at once: one entry
            db.run(_audit.INSERT_TOKEN_SET, _audit.token_set_row(tokens, self._dialect.ts))

    def token_sets(self, where: AuditFilter) -> list[TokenSet]:
        sql, params = _audit.token_sets_query(where, self._dialect.ts)
        return _audit.token_sets_from_rows(self._all(sql, params), self._dialect.dt)

    def active_counts(self) -> dict[tuple[str, str, str], int]:
        return {(r[0], r[1], r[2]): r[3] for r in self._all(_audit.ACTIVE_COUNTS)}

    # Drained sites ----------------------------------------------------------------------

    def drain_site(self, drain: SiteDrain) -> SiteDrain | None:
        ts = self._dialect.ts
        with self._tx() as db:
            row = db.one(_drains.FIND_DRAIN + self._dialect.row_lock, (drain.site,))
            db.run(_drains.PUT_DRAIN, (drain.site, drain.by, drain.reason, ts(drain.since)))
            db.run(_drains.LOG_DRAIN, (ts(drain.since), drain.site, DRAINED, drain.by, drain.reason))
        return None if row is None else _drains.drain_from_row(row, self._dialect.dt)

    def undrain_site(self, site: str, by: str, time: datetime) -> SiteDrain | None:
        with self._tx() as db:
            row = db.one(_drains.FIND_DRAIN + self._dialect.row_lock, (site,))
            if row is not None:
                db.run(_drains.DROP_DRAIN, (site,))
                db.run(_drains.LOG_DRAIN, (self._dialect.ts(time), site, UNDRAINED, by, str(row[2])))
        return None if row is None else _drains.drain_from_row(row, self._dialect.dt)

    def site_drains(self) -> list[SiteDrain]:
        return [_drains.drain_from_row(r, self._dialect.dt) for r in self._all(_drains.SITE_DRAINS)]

    def drain_log(self, where: AuditFilter) -> list[DrainChange]:
        sql, params = _drains.log_query(where, self._dialect.ts)
        return _drains.log_from_rows(self._all(sql, params), self._dialect.dt)

    # Cancels waiting for the scheduler ----------------------------------------------------

    def request_cancel(self, request: CancelRequest, message: str) -> tuple[Job, bool]:
        job_id, data = request.job_id, {"by": request.by, "role": request.role} if request.by else {}
        event = None
        with self._tx(fenced=True) as db:
            state = self._lock_state(db, job_id)
            new = not state.terminal and db.one(
                _cancels.PUT, (job_id, request.by, request.role, self._dialect.ts(request.time))
            ) is not None
            if new:
                self._set_fields(db, job_id, request.time, None, {"message": message})
                event = self._append_event(db, job_id, request.time, _cancels.REQUESTED, state, message, data)
            row = self._job_row(db, job_id)
        if event is not None:
            self._publish([event])
        return self._row_to_job(row), new

    def cancel_request(self, job_id: JobId) -> CancelRequest | None:
        row = self._one(_cancels.FIND, (job_id,))
        return None if row is None else _cancels.from_row(row, self._dialect.dt)

    def cancel_requests(self, limit: int = 1000) -> list[CancelRequest]:
        return [_cancels.from_row(r, self._dialect.dt) for r in self._all(_cancels.OLDEST, (limit,))]

    def drop_cancel_request(self, job_id: JobId) -> None:
        with self._tx(fenced=True) as db:
            db.run(_cancels.DROP, (job_id,))

    # Fair share ----------------------------------------------------------------------------

    def save_fair_usage(self, usage: FairUsage) -> None:
        rows = [(t, usage.half_life_s, usage.at_s, *v) for t, v in sorted(usage.sums.items())]
        with self._tx(fenced=True) as db:
            db.run("DELETE FROM fair_usage")
            if rows:
                db.many(
                    "INSERT INTO fair_usage (tenant, half_life_s, at_s, accelerators, cpus, memory_gb) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )

    def load_fair_usage(self) -> FairUsage | None:
        rows = self._all("SELECT tenant, half_life_s, at_s, accelerators, cpus, memory_gb FROM fair_usage")
        if not rows:
            return None
        sums = {str(r[0]): (float(r[3]), float(r[4]), float(r[5])) for r in rows}
        return FairUsage(half_life_s=float(rows[0][1]), at_s=float(rows[0][2]), sums=sums)

    def save_reclaim_state(self, state: ReclaimState) -> None:
        rows = [(p, level, at) for p, (level, at) in sorted(state.levels.items())]
        booked = [(b.attempt_id, b.partition, b.units, b.for_job, b.since_s, b.until_s, int(b.stopped),
                   b.beside) for b in state.bookings]
        with self._tx(fenced=True) as db:
            db.run("DELETE FROM reclaim_budget")
            if rows:
                db.many("INSERT INTO reclaim_budget (partition_id, level, at_s) VALUES (?, ?, ?)", rows)
            db.run("DELETE FROM reclaim_booked")
            if booked:
                db.many(f"INSERT INTO reclaim_booked ({_BOOKED}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", booked)

    def load_reclaim_state(self) -> ReclaimState:
        rows = self._all("SELECT partition_id, level, at_s FROM reclaim_budget")
        booked = self._all(f"SELECT {_BOOKED} FROM reclaim_booked ORDER BY since_s, attempt_id")
        return ReclaimState(
            levels={str(r[0]): (float(r[1]), float(r[2])) for r in rows},
            bookings=tuple(
                ReclaimBooking(str(a), str(p), int(u), str(j), float(s), float(e), bool(stopped), int(b))
                for a, p, u, j, s, e, stopped, b in booked
            ),
        )

    # The active scheduler's view of its sites ---------------------------------------------

    def publish_site_report(self, body: str, now: datetime) -> None:
        with self._tx(fenced=True) as db:
            db.run(
                "INSERT INTO site_report (id, epoch, time, body) VALUES (1, ?, ?, ?) ON CONFLICT (id) "
                "DO UPDATE SET epoch = excluded.epoch, time = excluded.time, body = excluded.body",
                (self._fence, self._dialect.ts(now), body),
            )

    def site_report(self) -> tuple[str, datetime] | None:
        row = self._one("SELECT body, time FROM site_report WHERE id = 1")
        return None if row is None else (str(row[0]), self._dialect.dt(row[1]))

    def broker_id(self) -> str:
        row = self._one("SELECT broker_id FROM broker_identity WHERE id = 1")
        if row is not None:
            return str(row[0])
        # A store from before ids were made per store tagged its instances with the old default.
        made = LEGACY_BROKER_ID if self._one("SELECT 1 FROM attempts LIMIT 1") else f"szb-{token_hex(4)}"
        with self._tx() as db:  # (two processes of one store: the first one's id stays)
            db.run("INSERT INTO broker_identity (id, broker_id) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
                   (made,))
        row = self._one("SELECT broker_id FROM broker_identity WHERE id = 1")
        return made if row is None else str(row[0])

    # Scheduler leadership ------------------------------------------------------------------

    def claim_leadership(
        self, holder: str, backend_pid: int | None, lease_s: float, now: datetime, *,
        lock_wait_s: float | None = None,
    ) -> int:
        until = self._dialect.ts(now + timedelta(seconds=lease_s))
        try:
            with self._tx() as db:
                if lock_wait_s is not None:
                    self._dialect.limit_lock_wait(db.conn, lock_wait_s)
                # The UPDATE waits for every fenced transaction holding the row FOR SHARE.
                row = db.one(
                    "UPDATE leadership SET epoch = epoch + 1, holder = ?, holder_pid = ?, lease_until = ? "
                    "WHERE id = 1 RETURNING epoch",
                    (holder, backend_pid, until),
                )
        except Exception as exc:
            if self._dialect.lock_timed_out(exc):
                raise LeaseBlocked(f"a write held the leadership row for over {lock_wait_s} s") from exc
            raise
        if row is None:  # pragma: no cover - the schema always inserts the row
            raise StoreError("the leadership row is missing")
        return int(row[0])

    def renew_leadership(self, holder: str, epoch: int, lease_s: float, now: datetime) -> bool:
        until = self._dialect.ts(now + timedelta(seconds=lease_s))
        with self._tx() as db:
            row = db.one(
                "UPDATE leadership SET lease_until = ? "
                "WHERE id = 1 AND epoch = ? AND holder = ? RETURNING epoch",
                (until, epoch, holder),
            )
        return row is not None

    def leadership(self) -> LeaseRow | None:
        row = self._one("SELECT epoch, holder, holder_pid, lease_until FROM leadership WHERE id = 1")
        if row is None or row[1] is None:
            return None
        return LeaseRow(
            epoch=int(row[0]),
            holder=row[1],
            holder_pid=None if row[2] is None else int(row[2]),
            lease_until=self._dialect.dt(row[3]),
        )
