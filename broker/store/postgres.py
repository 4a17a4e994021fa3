"""PostgreSQL implementation of the store (psycopg 3): the shared, multi-process option.

It mirrors `SqliteStore` query for query. Where SQLite relies on its single writer, this
module takes row locks (`FOR UPDATE`, the `last_seq` counter) or a per-month advisory lock,
so several broker processes may share one database. psycopg is imported lazily: the broker
runs without it until a `PostgresStore` is built.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from broker.model import (
    Attempt,
    AttemptId,
    AttemptState,
    Job,
    JobEvent,
    JobId,
    JobState,
    Offer,
    SiteId,
    TenantId,
)
from broker.states import check_transition
from broker.store import _audit
from broker.store._audit import AuditFilter, PolicyVersion, pg
from broker.store._postgres_schema import (
    ATTEMPT_COLS,
    JOB_COLS,
    LOCK_SCHEMA,
    LOCK_SPEND,
    SCHEMA,
    SPEND_COLS,
)
from broker.store.base import (
    JOB_FIELDS,
    LIVE_ATTEMPT_STATES,
    UNFINISHED,
    JobMove,
    JobNotFoundError,
    JobPage,
    JobStore,
    SpendEntry,
    StoreError,
    Submission,
    attempt_from_row,
    attempt_updates,
    new_attempt_id,
)

if TYPE_CHECKING:
    import psycopg


def _ts(value: datetime) -> datetime:
    """The instant as an aware UTC datetime (naive values are local time, as in SqliteStore)."""
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


def _dt(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _text(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL; store U+FFFD instead (log tails come from processes)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class PostgresStore(JobStore):
    """One psycopg connection guarded by a lock, like SqliteStore; reconnects when broken."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'shangzhuang-broker[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.dsn = dsn
        self._lock = threading.RLock()
        self._conn = self._connect()
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SCHEMA,))
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return self._psycopg.connect(self.dsn, autocommit=True)

    @property
    def _db(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._lock:
            db = self._db
            with db.transaction():
                yield db

    def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            return self._db.execute(sql, [_text(p) for p in params]).fetchone()

    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # A looked-up id or filter with a NUL (hostile input) matches nothing instead of raising.
        with self._lock:
            return self._db.execute(sql, [_text(p) for p in params]).fetchall()

    # Jobs ---------------------------------------------------------------------------------

    def _row_to_job(self, row: Sequence[Any]) -> Job:
        spec, state, reason = self._job_spec(JobId(row[0]), JobState(row[3]), row[4])
        return Job(
            id=JobId(row[0]),
            tenant=TenantId(row[1]),
            client_id=row[2],
            state=state,
            spec=spec,
            created_at=_dt(row[5]),
            updated_at=_dt(row[6]),
            site=SiteId(row[7]) if row[7] else None,
            attempts=row[8],
            exit_code=row[9],
            log_tail=row[10],
            message=reason or row[11],
            policy_hash=row[12],
        )

    def submit(self, tenant: TenantId, items: Sequence[Submission], now: datetime) -> list[tuple[Job, bool]]:
        results: list[tuple[Job, bool]] = []
        events: list[JobEvent] = []
        ts = _ts(now)
        with self._tx() as db:
            for item in items:
                client_id = _text(item.client_id) or None
                if client_id:
                    row = db.execute(
                        f"SELECT {JOB_COLS} FROM jobs WHERE tenant=%s AND client_id=%s", (tenant, client_id)
                    ).fetchone()
                    if row is not None:
                        results.append((self._row_to_job(row), False))
                        continue
                job_id = self.ids.next(now)
                # ON CONFLICT: another broker process may commit the same client_id between the
                # SELECT above and this INSERT; the insert then waits for it and yields to it.
                inserted = db.execute(
                    "INSERT INTO jobs (id, tenant, client_id, state, spec, created_at, updated_at, last_seq)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,1)"
                    " ON CONFLICT (tenant, client_id) WHERE client_id IS NOT NULL DO NOTHING RETURNING id",
                    (job_id, tenant, client_id, JobState.QUEUED.value, item.spec.model_dump_json(), ts, ts),
                ).fetchone()
                if inserted is None:
                    row = db.execute(
                        f"SELECT {JOB_COLS} FROM jobs WHERE tenant=%s AND client_id=%s", (tenant, client_id)
                    ).fetchone()
                    if row is None:  # pragma: no cover - the conflicting row was committed
                        raise StoreError(f"client_id {client_id!r} conflicted but is not visible")
                    results.append((self._row_to_job(row), False))
                    continue
                if item.spec.labels:
                    with db.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO job_labels (job_id, key, value) VALUES (%s,%s,%s)",
                            [(job_id, _text(k), _text(v)) for k, v in item.spec.labels.items()],
                        )
                db.execute(
                    "INSERT INTO events VALUES (%s,%s,%s,%s,%s,%s,%s)",
                    (job_id, 1, ts, "submitted", JobState.QUEUED.value, "job accepted", "{}"),
                )
                job = Job(
                    id=job_id,
                    tenant=tenant,
                    spec=item.spec,
                    client_id=client_id,
                    created_at=now,
                    updated_at=now,
                )
                results.append((job, True))
                events.append(
                    JobEvent(
                        job_id=job_id,
                        seq=1,
                        time=now,
                        kind="submitted",
                        state=JobState.QUEUED,
                        message="job accepted",
                    )
                )
        self._publish(events)
        self._flush_quarantine()
        return results

    def get(self, job_id: str, tenant: TenantId | None = None) -> Job:
        row = self._fetchone(f"SELECT {JOB_COLS} FROM jobs WHERE id=%s", (job_id,))
        if row is None or (tenant is not None and row[1] != tenant):
            raise JobNotFoundError(f"job {job_id!r} not found")
        job = self._row_to_job(row)
        self._flush_quarantine()
        return job

    def list_jobs(
        self,
        tenant: TenantId | None,
        *,
        states: Sequence[JobState] = (),
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> JobPage:
        where, params = ["j.id > %s"], [_text(page_token)]
        if tenant is not None:
            where.append("j.tenant = %s")
            params.append(tenant)
        if states:
            where.append("j.state = ANY(%s)")
            params.append([s.value for s in states])
        for key, value in (labels or {}).items():
            where.append(
                "EXISTS (SELECT 1 FROM job_labels l WHERE l.key=%s AND l.value=%s AND l.job_id=j.id)"
            )
            params.extend([_text(key), _text(value)])
        sql = (
            f"SELECT {', '.join('j.' + c.strip() for c in JOB_COLS.split(','))} FROM jobs j "
            f"WHERE {' AND '.join(where)} ORDER BY j.id LIMIT %s"
        )
        rows = self._fetchall(sql, [*params, page_size + 1])
        jobs = [self._row_to_job(r) for r in rows[:page_size]]
        token = jobs[-1].id if len(rows) > page_size else ""
        self._flush_quarantine()
        if states:  # a quarantined job is FAILED now, whatever its row said
            jobs = [j for j in jobs if j.state in states]
        return JobPage(jobs=jobs, next_page_token=token)

    def _append_event(
        self,
        db: psycopg.Connection[tuple[Any, ...]],
        job_id: JobId,
        now: datetime,
        kind: str,
        state: JobState,
        message: str,
        data: Mapping[str, Any] | None,
    ) -> JobEvent:
        # The row lock taken by this UPDATE makes seqs per job contiguous across processes.
        row = db.execute(
            "UPDATE jobs SET last_seq = last_seq + 1 WHERE id=%s RETURNING last_seq", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        seq: int = row[0]
        kind, message, payload = _text(kind), _text(message), dict(data or {})
        at = _ts(now)
        # A job's event times never go back (a pass may write with the time it started at).
        prev = db.execute(
            "SELECT time FROM events WHERE job_id=%s AND seq=%s", (job_id, seq - 1)
        ).fetchone()
        if prev is not None and prev[0] > at:
            at = _dt(prev[0])
        db.execute(
            "INSERT INTO events VALUES (%s,%s,%s,%s,%s,%s,%s)",
            (
                job_id,
                seq,
                at,
                kind,
                state.value,
                message,
                json.dumps(payload, default=str),
            ),
        )
        return JobEvent(
            job_id=job_id, seq=seq, time=at, kind=kind, state=state, message=message, data=payload
        )

    def _set_fields(
        self,
        db: psycopg.Connection[tuple[Any, ...]],
        job_id: JobId,
        now: datetime,
        state: JobState | None,
        fields: Mapping[str, Any],
    ) -> None:
        unknown = set(fields) - JOB_FIELDS
        if unknown:
            raise StoreError(f"unknown job fields {sorted(unknown)}")
        sets = ["updated_at=%s"]
        params: list[Any] = [_ts(now)]
        if state is not None:
            sets.append("state=%s")
            params.append(state.value)
        for key, value in fields.items():
            sets.append(f"{key}=%s")
            params.append(_text(value))
        db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=%s", [*params, job_id])

    def _lock_state(self, db: psycopg.Connection[tuple[Any, ...]], job_id: JobId) -> JobState:
        row = db.execute("SELECT state FROM jobs WHERE id=%s FOR UPDATE", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        return JobState(row[0])

    def transition(
        self,
        job_id: JobId,
        new_state: JobState,
        now: datetime,
        *,
        kind: str = "state",
        message: str = "",
        data: Mapping[str, Any] | None = None,
        expect: JobState | None = None,
        **fields: Any,
    ) -> Job:
        move = JobMove(new_state, kind, message, data, expect, fields)
        with self._tx() as db:
            event = self._move(db, job_id, self._lock_state(db, job_id), now, move)
            job_row = db.execute(f"SELECT {JOB_COLS} FROM jobs WHERE id=%s", (job_id,)).fetchone()
        if event is not None:
            self._publish([event])
        assert job_row is not None  # the row is locked by this transaction
        job = self._row_to_job(job_row)
        self._flush_quarantine()
        return job

    def _move(
        self,
        db: psycopg.Connection[tuple[Any, ...]],
        job_id: JobId,
        old: JobState,
        now: datetime,
        move: JobMove,
    ) -> JobEvent | None:
        """Apply one state change inside the caller's transaction; None when `expect` differs."""
        if move.expect is not None and old != move.expect:
            return None
        check_transition(job_id, old, move.state)
        fields = dict(move.fields)
        if move.message and "message" not in fields:
            fields["message"] = move.message
        self._set_fields(db, job_id, now, move.state, fields)
        return self._append_event(db, job_id, now, move.kind, move.state, move.message, move.data)

    def record(
        self,
        job_id: JobId,
        now: datetime,
        *,
        kind: str,
        message: str = "",
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Job:
        with self._tx() as db:
            state = self._lock_state(db, job_id)
            self._set_fields(db, job_id, now, None, fields)
            event = self._append_event(db, job_id, now, kind, state, message, data)
            job_row = db.execute(f"SELECT {JOB_COLS} FROM jobs WHERE id=%s", (job_id,)).fetchone()
        self._publish([event])
        assert job_row is not None  # the row is locked by this transaction
        job = self._row_to_job(job_row)
        self._flush_quarantine()
        return job

    def record_many(
        self, entries: Sequence[tuple[JobId, str, str, Mapping[str, Any]]], now: datetime
    ) -> None:
        events = []
        with self._tx() as db:
            for job_id, kind, message, data in entries:
                row = db.execute("SELECT state FROM jobs WHERE id=%s FOR UPDATE", (job_id,)).fetchone()
                if row is None:
                    continue
                db.execute("UPDATE jobs SET message=%s WHERE id=%s", (_text(message), job_id))
                events.append(self._append_event(db, job_id, now, kind, JobState(row[0]), message, data))
        self._publish(events)

    def events_after(self, job_id: JobId, after_seq: int, limit: int = 1000) -> list[JobEvent]:
        rows = self._fetchall(
            "SELECT job_id, seq, time, kind, state, message, data FROM events "
            "WHERE job_id=%s AND seq>%s ORDER BY seq LIMIT %s",
            (job_id, after_seq, limit),
        )
        return [
            JobEvent(
                job_id=JobId(r[0]),
                seq=r[1],
                time=_dt(r[2]),
                kind=r[3],
                state=JobState(r[4]),
                message=r[5],
                data=json.loads(r[6]),
            )
            for r in rows
        ]

    def run_times(self, job_ids: Sequence[JobId]) -> dict[JobId, tuple[datetime | None, datetime | None]]:
        if not job_ids:
            return {}
        rows = self._fetchall(
            "SELECT job_id, MIN(CASE WHEN state = 'RUNNING' THEN time END), "
            "MAX(CASE WHEN state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN time END) "
            "FROM events WHERE job_id = ANY(%s) GROUP BY job_id",
            (list(job_ids),),
        )
        return {
            JobId(r[0]): (_dt(r[1]) if r[1] is not None else None, _dt(r[2]) if r[2] is not None else None)
            for r in rows
        }

    def jobs_in_states(self, states: Sequence[JobState], limit: int = 10_000) -> list[Job]:
        if not states:
            return []
        rows = self._fetchall(
            f"SELECT {JOB_COLS} FROM jobs WHERE state = ANY(%s) ORDER BY id LIMIT %s",
            ([s.value for s in states], limit),
        )
        jobs = [self._row_to_job(r) for r in rows]
        self._flush_quarantine()
        return [j for j in jobs if j.state in states]

    def count_by_state(self, tenant: TenantId | None = None) -> dict[JobState, int]:
        if tenant is None:
            rows = self._fetchall("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        else:
            rows = self._fetchall(
                "SELECT state, COUNT(*) FROM jobs WHERE tenant=%s GROUP BY state", (tenant,)
            )
        return {JobState(state): n for state, n in rows}

    def count_unfinished(self, tenant: TenantId) -> int:
        row = self._fetchone(
            "SELECT COUNT(*) FROM jobs WHERE tenant=%s AND state = ANY(%s)",
            (tenant, [s.value for s in UNFINISHED]),
        )
        return int(row[0]) if row is not None else 0

    # Attempts -----------------------------------------------------------------------------

    def _row_to_attempt(self, r: Sequence[Any]) -> Attempt:
        return attempt_from_row(r, _dt)

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
        ts = _ts(now)
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET attempts = attempts + 1, updated_at=%s WHERE id=%s RETURNING attempts",
                (ts, job_id),
            ).fetchone()
            if row is None:
                raise JobNotFoundError(f"job {job_id!r} not found")
            number: int = row[0]
            attempt_id = new_attempt_id(job_id, number)
            db.execute(
                f"INSERT INTO attempts ({ATTEMPT_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (
                    attempt_id,
                    job_id,
                    number,
                    site,
                    offer.model_dump_json(),
                    _text(token),
                    AttemptState.PENDING.value,
                    None,
                    ts,
                    ts,
                    "",
                    _text(secret_hash),
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
        sets: list[str] = ["updated_at=%s"]
        params: list[Any] = [_ts(now)]
        for col, value in attempt_updates(state, backend_id, error, secret_hash):
            sets.append(f"{col}=%s")
            params.append(_text(value))
        guard = " AND state IN (%s, %s)" if state is not None else ""
        events: list[JobEvent] = []
        with self._tx() as db:
            row = db.execute(
                f"UPDATE attempts SET {', '.join(sets)} WHERE id=%s{guard} RETURNING {ATTEMPT_COLS}",
                [*params, attempt_id, *(LIVE_ATTEMPT_STATES if guard else ())],
            ).fetchone()
            if row is None and guard:  # terminal already: keep it as it is, and its job too
                row = db.execute(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE id=%s", (attempt_id,)).fetchone()
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
        row = self._fetchone(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE id=%s", (attempt_id,))
        if row is None:
            raise StoreError(f"attempt {attempt_id!r} not found")
        return self._row_to_attempt(row)

    def attempts_for(self, job_id: JobId) -> list[Attempt]:
        rows = self._fetchall(
            f"SELECT {ATTEMPT_COLS} FROM attempts WHERE job_id=%s ORDER BY number", (job_id,)
        )
        return [self._row_to_attempt(r) for r in rows]

    def live_attempts(self) -> list[Attempt]:
        rows = self._fetchall(
            f"SELECT {ATTEMPT_COLS} FROM attempts WHERE state IN (%s, %s) ORDER BY id",
            (AttemptState.PENDING.value, AttemptState.RUNNING.value),
        )
        return [self._row_to_attempt(r) for r in rows]

    # Money --------------------------------------------------------------------------------

    @staticmethod
    def _lock_month(db: psycopg.Connection[tuple[Any, ...]], month: str) -> None:
        """Serialise every change to `month`'s totals, across processes, until commit."""
        db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_SPEND, month))

    def reserve_spend(
        self, entry: SpendEntry, *, tenant_limit: float | None, global_limit: float | None
    ) -> bool:
        total = (
            "SELECT COALESCE(SUM(CASE WHEN settled THEN spent ELSE reserved END), 0) FROM spend"
            " WHERE month=%s"
        )
        with self._tx() as db:
            self._lock_month(db, entry.month)
            if tenant_limit is not None:
                row = db.execute(total + " AND tenant=%s", (entry.month, entry.tenant)).fetchone()
                assert row is not None  # an aggregate always returns a row
                if row[0] + entry.reserved > tenant_limit + 1e-9:
                    return False
            if global_limit is not None:
                row = db.execute(total, (entry.month,)).fetchone()
                assert row is not None
                if row[0] + entry.reserved > global_limit + 1e-9:
                    return False
            db.execute(
                f"INSERT INTO spend ({SPEND_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (attempt_id) DO UPDATE SET tenant=EXCLUDED.tenant, site=EXCLUDED.site, "
                "job_id=EXCLUDED.job_id, month=EXCLUDED.month, reserved=EXCLUDED.reserved, "
                "spent=EXCLUDED.spent, voucher=EXCLUDED.voucher, settled=EXCLUDED.settled, "
                "voucher_id=EXCLUDED.voucher_id",
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
                    _text(entry.voucher_id),
                ),
            )
        return True

    def settle_spend(self, attempt_id: AttemptId, spent: float, voucher: float) -> None:
        with self._tx() as db:
            row = db.execute("SELECT month FROM spend WHERE attempt_id=%s", (attempt_id,)).fetchone()
            if row is None:
                return
            self._lock_month(db, row[0])
            db.execute(
                "UPDATE spend SET spent=%s, voucher=%s, settled=TRUE WHERE attempt_id=%s",
                (spent, voucher, attempt_id),
            )

    def spend_entries(self, month: str, tenant: TenantId | None = None) -> list[SpendEntry]:
        sql = f"SELECT {SPEND_COLS} FROM spend WHERE month=%s"
        params: list[Any] = [month]
        if tenant is not None:
            sql += " AND tenant=%s"
            params.append(tenant)
        rows = self._fetchall(sql + " ORDER BY attempt_id", params)
        return [
            SpendEntry(
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
            )
            for r in rows
        ]

    # Audit trail ---------------------------------------------------------------------------

    def record_policy_version(self, version: PolicyVersion) -> None:
        with self._tx() as db:
            db.execute(pg(_audit.INSERT_POLICY), _audit.policy_row(version, _ts))

    def policy_versions(self, limit: int = 50) -> list[PolicyVersion]:
        rows = self._fetchall(pg(_audit.LIST_POLICIES), (limit,))
        return [_audit.policy_from_row(r, _dt) for r in rows]

    def find_policy_version(self, hash_prefix: str) -> PolicyVersion | None:
        row = self._fetchone(pg(_audit.FIND_POLICY), _audit.prefix_range(hash_prefix))
        return None if row is None else _audit.policy_from_row(row, _dt)

    def audit_events(self, where: AuditFilter) -> list[tuple[TenantId, JobEvent]]:
        sql, params = _audit.audit_query(where, _ts)
        return _audit.audit_from_rows(self._fetchall(pg(sql), params), _dt)

    def active_counts(self) -> dict[tuple[str, str, str], int]:
        return {(r[0], r[1], r[2]): r[3] for r in self._fetchall(_audit.ACTIVE_COUNTS)}

    def close(self) -> None:
        with self._lock:
            self._conn.close()
