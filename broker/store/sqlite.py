"""SQLite (WAL) implementation of the store: the embedded default."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.model import (
    Attempt,
    AttemptId,
    AttemptState,
    Job,
    JobEvent,
    JobId,
    JobSpec,
    JobState,
    Offer,
    SiteId,
    TenantId,
)
from broker.states import check_transition
from broker.store import _audit
from broker.store._audit import AuditFilter, PolicyVersion
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  client_id TEXT,
  state TEXT NOT NULL,
  spec TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  site TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER,
  log_tail TEXT NOT NULL DEFAULT '',
  message TEXT NOT NULL DEFAULT '',
  policy_hash TEXT NOT NULL DEFAULT '',
  last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_client_id ON jobs(tenant, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, id);
CREATE INDEX IF NOT EXISTS jobs_tenant_state ON jobs(tenant, state);
CREATE TABLE IF NOT EXISTS job_labels (
  job_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (key, value, job_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL,
  state TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
  id TEXT PRIMARY KEY, job_id TEXT NOT NULL, number INTEGER NOT NULL, site TEXT NOT NULL,
  offer TEXT NOT NULL, token TEXT NOT NULL UNIQUE, state TEXT NOT NULL, backend_id TEXT,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, error TEXT NOT NULL DEFAULT '',
  secret_hash TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts(job_id, number);
CREATE INDEX IF NOT EXISTS attempts_state ON attempts(state);
CREATE TABLE IF NOT EXISTS spend (
  attempt_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, site TEXT NOT NULL, job_id TEXT NOT NULL,
  month TEXT NOT NULL, reserved REAL NOT NULL, spent REAL NOT NULL, voucher REAL NOT NULL,
  settled INTEGER NOT NULL, voucher_id TEXT
);
CREATE INDEX IF NOT EXISTS spend_month ON spend(month, tenant);
CREATE TABLE IF NOT EXISTS policy_versions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, hash TEXT NOT NULL, result TEXT NOT NULL,
  source TEXT NOT NULL, content TEXT NOT NULL, errors TEXT NOT NULL, time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_versions_hash ON policy_versions(hash);
"""

SPEC_CACHE_SIZE = 200_000

_JOB_COLS = (
    "id, tenant, client_id, state, spec, created_at, updated_at, site, attempts, exit_code, "
    "log_tail, message, policy_hash"
)
_ATTEMPT_COLS = (
    "id, job_id, number, site, offer, token, state, backend_id, created_at, updated_at, error, secret_hash"
)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


class SqliteStore(JobStore):
    """One connection guarded by a lock; WAL so readers never block the writer.

    `synchronous=NORMAL` in WAL mode survives any crash of the broker process (the case the
    tests exercise); `durability="full"` also survives power loss at an fsync per commit.
    """

    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self._conn.execute("PRAGMA foreign_keys=OFF")
        self._conn.executescript(SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(attempts)")}
        if "secret_hash" not in columns:  # a data dir from before per-attempt agent secrets
            self._conn.execute("ALTER TABLE attempts ADD COLUMN secret_hash TEXT NOT NULL DEFAULT ''")
        self._specs: dict[str, JobSpec] = {}

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # Jobs ---------------------------------------------------------------------------------

    def _row_to_job(self, row: Sequence[Any]) -> Job:
        # Specs never change once stored: parse each once (scans of a deep queue read many).
        state = JobState(row[3])
        spec, reason = self._specs.get(row[0]), None
        if spec is None:
            spec, state, reason = self._job_spec(JobId(row[0]), state, row[4])
            if reason is None and state == JobState(row[3]):
                if len(self._specs) >= SPEC_CACHE_SIZE:
                    self._specs.clear()
                self._specs[row[0]] = spec
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
        return self.submit_many([(tenant, items)], now)[0]

    def submit_many(
        self, groups: Sequence[tuple[TenantId, Sequence[Submission]]], now: datetime
    ) -> list[list[tuple[Job, bool]]]:
        out: list[list[tuple[Job, bool]]] = []
        events: list[JobEvent] = []
        ts = _ts(now)
        with self._tx() as db:
            for tenant, items in groups:
                results: list[tuple[Job, bool]] = []
                for item in items:
                    results.append(self._insert(db, tenant, item, now, ts, events))
                out.append(results)
        self._publish(events)
        self._flush_quarantine()
        return out

    def _insert(
        self,
        db: sqlite3.Connection,
        tenant: TenantId,
        item: Submission,
        now: datetime,
        ts: float,
        events: list[JobEvent],
    ) -> tuple[Job, bool]:
        if item.client_id:
            row = db.execute(
                f"SELECT {_JOB_COLS} FROM jobs WHERE tenant=? AND client_id=?", (tenant, item.client_id)
            ).fetchone()
            if row is not None:
                return self._row_to_job(row), False
        job_id = self.ids.next(now)
        db.execute(
            "INSERT INTO jobs (id, tenant, client_id, state, spec, created_at, updated_at, last_seq)"
            " VALUES (?,?,?,?,?,?,?,1)",
            (
                job_id,
                tenant,
                item.client_id or None,
                JobState.QUEUED.value,
                item.spec.model_dump_json(),
                ts,
                ts,
            ),
        )
        if item.spec.labels:
            db.executemany(
                "INSERT INTO job_labels (job_id, key, value) VALUES (?,?,?)",
                [(job_id, k, v) for k, v in item.spec.labels.items()],
            )
        db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?)",
            (job_id, 1, ts, "submitted", JobState.QUEUED.value, "job accepted", "{}"),
        )
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
        job = Job(
            id=job_id,
            tenant=tenant,
            spec=item.spec,
            client_id=item.client_id or None,
            created_at=now,
            updated_at=now,
        )
        return job, True

    def get(self, job_id: str, tenant: TenantId | None = None) -> Job:
        with self._lock:
            row = self._conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,)).fetchone()
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
        where, params = ["j.id > ?"], [page_token]
        if tenant is not None:
            where.append("j.tenant = ?")
            params.append(tenant)
        if states:
            where.append(f"j.state IN ({','.join('?' * len(states))})")
            params.extend(s.value for s in states)
        for key, value in (labels or {}).items():
            where.append("EXISTS (SELECT 1 FROM job_labels l WHERE l.key=? AND l.value=? AND l.job_id=j.id)")
            params.extend([key, value])
        sql = (
            f"SELECT {', '.join('j.' + c.strip() for c in _JOB_COLS.split(','))} FROM jobs j "
            f"WHERE {' AND '.join(where)} ORDER BY j.id LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, [*params, page_size + 1]).fetchall()
        jobs = [self._row_to_job(r) for r in rows[:page_size]]
        token = jobs[-1].id if len(rows) > page_size else ""
        self._flush_quarantine()
        if states:  # a quarantined job is FAILED now, whatever its row said
            jobs = [j for j in jobs if j.state in states]
        return JobPage(jobs=jobs, next_page_token=token)

    def _append_event(
        self,
        db: sqlite3.Connection,
        job_id: JobId,
        now: datetime,
        kind: str,
        state: JobState,
        message: str,
        data: Mapping[str, Any] | None,
    ) -> JobEvent:
        seq = db.execute(
            "UPDATE jobs SET last_seq = last_seq + 1 WHERE id=? RETURNING last_seq", (job_id,)
        ).fetchone()[0]
        ts = self._event_time(db, job_id, seq, _ts(now))
        payload = dict(data or {})
        db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?)",
            (job_id, seq, ts, kind, state.value, message, json.dumps(payload, default=str)),
        )
        return JobEvent(
            job_id=job_id, seq=seq, time=_dt(ts), kind=kind, state=state, message=message, data=payload
        )

    @staticmethod
    def _event_time(db: sqlite3.Connection, job_id: JobId, seq: int, ts: float) -> float:
        """`ts`, or the job's previous event time when that is later: a job's times never go back."""
        prev = db.execute("SELECT time FROM events WHERE job_id=? AND seq=?", (job_id, seq - 1)).fetchone()
        return ts if prev is None else max(ts, float(prev[0]))

    def _set_fields(
        self,
        db: sqlite3.Connection,
        job_id: JobId,
        now: datetime,
        state: JobState | None,
        fields: Mapping[str, Any],
    ) -> None:
        unknown = set(fields) - JOB_FIELDS
        if unknown:
            raise StoreError(f"unknown job fields {sorted(unknown)}")
        sets = ["updated_at=?"]
        params: list[Any] = [_ts(now)]
        if state is not None:
            sets.append("state=?")
            params.append(state.value)
        for key, value in fields.items():
            sets.append(f"{key}=?")
            params.append(value)
        db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", [*params, job_id])

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
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"job {job_id!r} not found")
            event = self._move(db, job_id, JobState(row[0]), now, move)
            job_row = db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if event is not None:
            self._publish([event])
        job = self._row_to_job(job_row)
        self._flush_quarantine()
        return job

    def _move(
        self, db: sqlite3.Connection, job_id: JobId, old: JobState, now: datetime, move: JobMove
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
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"job {job_id!r} not found")
            self._set_fields(db, job_id, now, None, fields)
            event = self._append_event(db, job_id, now, kind, JobState(row[0]), message, data)
            job_row = db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        self._publish([event])
        job = self._row_to_job(job_row)
        self._flush_quarantine()
        return job

    def record_many(
        self, entries: Sequence[tuple[JobId, str, str, Mapping[str, Any]]], now: datetime
    ) -> None:
        events = []
        ts = _ts(now)
        with self._tx() as db:
            for job_id, kind, message, data in entries:
                row = db.execute(
                    "UPDATE jobs SET last_seq = last_seq + 1, message=? WHERE id=? RETURNING last_seq, state",
                    (message, job_id),
                ).fetchone()
                if row is None:
                    continue
                payload = dict(data)
                at = self._event_time(db, job_id, row[0], ts)
                db.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                    (job_id, row[0], at, kind, row[1], message, json.dumps(payload, default=str)),
                )
                events.append(
                    JobEvent(
                        job_id=job_id,
                        seq=row[0],
                        time=_dt(at),
                        kind=kind,
                        state=JobState(row[1]),
                        message=message,
                        data=payload,
                    )
                )
        self._publish(events)

    def events_after(self, job_id: JobId, after_seq: int, limit: int = 1000) -> list[JobEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id, seq, time, kind, state, message, data FROM events "
                "WHERE job_id=? AND seq>? ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit),
            ).fetchall()
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
        marks = ",".join("?" * len(job_ids))
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id, MIN(CASE WHEN state = 'RUNNING' THEN time END), "
                "MAX(CASE WHEN state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN time END) "
                f"FROM events WHERE job_id IN ({marks}) GROUP BY job_id",
                list(job_ids),
            ).fetchall()
        return {
            JobId(r[0]): (_dt(r[1]) if r[1] is not None else None, _dt(r[2]) if r[2] is not None else None)
            for r in rows
        }

    def jobs_in_states(self, states: Sequence[JobState], limit: int = 10_000) -> list[Job]:
        if not states:
            return []
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ({','.join('?' * len(states))}) "
                "ORDER BY id LIMIT ?",
                [*(s.value for s in states), limit],
            ).fetchall()
        jobs = [self._row_to_job(r) for r in rows]
        self._flush_quarantine()
        return [j for j in jobs if j.state in states]

    def count_by_state(self, tenant: TenantId | None = None) -> dict[JobState, int]:
        sql, params = "SELECT state, COUNT(*) FROM jobs", []
        if tenant is not None:
            sql, params = sql + " WHERE tenant=?", [tenant]
        with self._lock:
            rows = self._conn.execute(sql + " GROUP BY state", params).fetchall()
        return {JobState(state): n for state, n in rows}

    def count_unfinished(self, tenant: TenantId) -> int:
        with self._lock:
            row = self._conn.execute(
                f"SELECT COUNT(*) FROM jobs WHERE tenant=? AND state IN ({','.join('?' * len(UNFINISHED))})",
                [tenant, *(s.value for s in UNFINISHED)],
            ).fetchone()
        return int(row[0])

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
                "UPDATE jobs SET attempts = attempts + 1, updated_at=? WHERE id=? RETURNING attempts",
                (ts, job_id),
            ).fetchone()
            if row is None:
                raise JobNotFoundError(f"job {job_id!r} not found")
            attempt_id = new_attempt_id(job_id, row[0])
            db.execute(
                f"INSERT INTO attempts ({_ATTEMPT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    attempt_id,
                    job_id,
                    row[0],
                    site,
                    offer.model_dump_json(),
                    token,
                    AttemptState.PENDING.value,
                    None,
                    ts,
                    ts,
                    "",
                    secret_hash,
                ),
            )
        return Attempt(
            id=attempt_id,
            job_id=job_id,
            number=row[0],
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
        sets: list[str] = ["updated_at=?"]
        params: list[Any] = [_ts(now)]
        for col, value in attempt_updates(state, backend_id, error, secret_hash):
            sets.append(f"{col}=?")
            params.append(value)
        guard = " AND state IN (?, ?)" if state is not None else ""
        events: list[JobEvent] = []
        with self._tx() as db:
            row = db.execute(
                f"UPDATE attempts SET {', '.join(sets)} WHERE id=?{guard} RETURNING {_ATTEMPT_COLS}",
                [*params, attempt_id, *(LIVE_ATTEMPT_STATES if guard else ())],
            ).fetchone()
            if row is None and guard:  # terminal already: keep it as it is, and its job too
                row = db.execute(f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE id=?", (attempt_id,)).fetchone()
                moves = ()
            if row is None:
                raise StoreError(f"attempt {attempt_id!r} not found")
            for move in moves:
                job_id = JobId(row[1])
                current = JobState(db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()[0])
                if current.terminal:
                    break
                event = self._move(db, job_id, current, now, move)
                if event is not None:
                    events.append(event)
        self._publish(events)
        return self._row_to_attempt(row)

    def get_attempt(self, attempt_id: str) -> Attempt:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE id=?", (attempt_id,)
            ).fetchone()
        if row is None:
            raise StoreError(f"attempt {attempt_id!r} not found")
        return self._row_to_attempt(row)

    def attempts_for(self, job_id: JobId) -> list[Attempt]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE job_id=? ORDER BY number", (job_id,)
            ).fetchall()
        return [self._row_to_attempt(r) for r in rows]

    def live_attempts(self) -> list[Attempt]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE state IN (?, ?) ORDER BY id",
                (AttemptState.PENDING.value, AttemptState.RUNNING.value),
            ).fetchall()
        return [self._row_to_attempt(r) for r in rows]

    # Money --------------------------------------------------------------------------------

    def reserve_spend(
        self, entry: SpendEntry, *, tenant_limit: float | None, global_limit: float | None
    ) -> bool:
        total = (
            "SELECT COALESCE(SUM(CASE WHEN settled THEN spent ELSE reserved END), 0) FROM spend WHERE month=?"
        )
        with self._tx() as db:
            if tenant_limit is not None:
                used = db.execute(total + " AND tenant=?", (entry.month, entry.tenant)).fetchone()[0]
                if used + entry.reserved > tenant_limit + 1e-9:
                    return False
            if global_limit is not None:
                used = db.execute(total, (entry.month,)).fetchone()[0]
                if used + entry.reserved > global_limit + 1e-9:
                    return False
            db.execute(
                "INSERT OR REPLACE INTO spend VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    entry.attempt_id,
                    entry.tenant,
                    entry.site,
                    entry.job_id,
                    entry.month,
                    entry.reserved,
                    entry.spent,
                    entry.voucher,
                    int(entry.settled),
                    entry.voucher_id,
                ),
            )
        return True

    def settle_spend(self, attempt_id: AttemptId, spent: float, voucher: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE spend SET spent=?, voucher=?, settled=1 WHERE attempt_id=?",
                (spent, voucher, attempt_id),
            )

    def spend_entries(self, month: str, tenant: TenantId | None = None) -> list[SpendEntry]:
        sql = (
            "SELECT tenant, site, job_id, attempt_id, month, reserved, spent, voucher, settled, voucher_id "
            "FROM spend WHERE month=?"
        )
        params: list[Any] = [month]
        if tenant is not None:
            sql += " AND tenant=?"
            params.append(tenant)
        sql += " ORDER BY attempt_id"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
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
            db.execute(_audit.INSERT_POLICY, _audit.policy_row(version, _ts))

    def policy_versions(self, limit: int = 50) -> list[PolicyVersion]:
        with self._lock:
            rows = self._conn.execute(_audit.LIST_POLICIES, (limit,)).fetchall()
        return [_audit.policy_from_row(r, _dt) for r in rows]

    def find_policy_version(self, hash_prefix: str) -> PolicyVersion | None:
        with self._lock:
            row = self._conn.execute(_audit.FIND_POLICY, _audit.prefix_range(hash_prefix)).fetchone()
        return None if row is None else _audit.policy_from_row(row, _dt)

    def audit_events(self, where: AuditFilter) -> list[tuple[TenantId, JobEvent]]:
        sql, params = _audit.audit_query(where, _ts)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return _audit.audit_from_rows(rows, _dt)

    def active_counts(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            rows = self._conn.execute(_audit.ACTIVE_COUNTS).fetchall()
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    def close(self) -> None:
        with self._lock:
            self._conn.close()
