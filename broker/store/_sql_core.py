"""The SQL store's machinery: one connection under a lock, transactions, fencing, row decoding,
and the event append every write shares. Queries are the same on every dialect.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any, TypeVar

from broker.model import Attempt, Job, JobEvent, JobId, JobSpec, JobState, SiteId, TenantId
from broker.states import check_transition
from broker.store._dialect import Db, Dialect, Row
from broker.store._queue_keys import queue_keys_of_text
from broker.store._rows import attempt_from_row
from broker.store._schema import INSERT_EVENT, JOB_COLS, create_schema
from broker.store.base import (
    JOB_FIELDS,
    FencedOut,
    JobMove,
    JobNotFoundError,
    JobStore,
    StoreError,
    StoreUnavailable,
)

UNREACHABLE = "the database cannot be reached"
"""`StoreUnavailable.summary` of a connection refused, timed out or unresolved."""
SPEC_CACHE_SIZE = 200_000
log = logging.getLogger(__name__)
T = TypeVar("T")


class SqlCore(JobStore):
    """One connection guarded by a lock; reconnects when the dialect says it broke."""

    def __init__(self, dialect: Dialect) -> None:
        super().__init__()
        self._dialect = dialect
        self._lock = threading.RLock()
        self._conn: Any = dialect.connect()
        self._specs: dict[str, tuple[str, JobSpec]] = {}
        """Parsed specs by job id, with the text each was parsed from."""
        self._fence: int | None = None
        with self._tx() as db:
            create_schema(db)

    @property
    def fence(self) -> int | None:
        """The epoch this store's scheduler writes are fenced at (None: unfenced)."""
        return self._fence

    def set_fence(self, epoch: int | None) -> None:
        self._fence = epoch

    def _handle(self) -> Db:
        if self._dialect.broken(self._conn):
            try:
                self._conn = self._dialect.connect()
            except Exception as exc:  # down, restarting, refusing connections
                raise StoreUnavailable(f"the database cannot be reached: {exc}", UNREACHABLE) from exc
        return Db(self._dialect, self._conn)

    @contextmanager
    def _tx(self, *, fenced: bool = False) -> Iterator[Db]:
        """A write transaction; a fenced one first checks this store still leads."""
        with self._lock:
            try:
                with ExitStack() as stack:
                    db = self._begin(stack)
                    if fenced and self._fence is not None:
                        self._check_fence(db, self._fence)
                    yield db
            except Exception as exc:  # the body's, or the commit's
                self._unreachable(exc)
                raise

    def _begin(self, stack: ExitStack) -> Db:
        """Open a transaction. A connection that died while idle (the server restarted, a proxy
        dropped it) is found out only by using it, and nothing was sent on it yet: begin once
        more on a new one rather than fail the caller."""
        db = self._handle()
        try:
            stack.enter_context(self._dialect.transaction(db.conn))
            return db
        except Exception:
            if not self._dialect.broken(db.conn):
                raise
        db = self._handle()
        stack.enter_context(self._dialect.transaction(db.conn))
        return db

    def _reading(self, read: Callable[[Db], T]) -> T:
        """Run a read; on a connection that died while idle, once more on a new one."""
        with self._lock:
            db = self._handle()
            try:
                return read(db)
            except Exception as exc:
                if not self._dialect.broken(db.conn):
                    self._unreachable(exc)
                    raise
            db = self._handle()
            try:
                return read(db)
            except Exception as exc:
                self._unreachable(exc)
                raise

    def _unreachable(self, exc: Exception) -> None:
        """Raise StoreUnavailable for a failure that broke the connection, or a disk that takes
        no writes now (full, read-only): callers may retry. A damaged store is a StoreError
        that says so (SQLite's own words name neither the cause nor the remedy)."""
        if isinstance(exc, StoreError):
            return
        if self._dialect.broken(self._conn):
            lost = "the database connection was lost"
            raise StoreUnavailable(f"{lost}: {exc}", lost) from exc
        if self._dialect.unwritable(self._conn, exc):
            text = str(exc).lower()
            why = " (it is read-only)" if "read-only" in text or "readonly" in text else (
                " (its disk is full)" if "full" in text or "no space" in text else "")
            summary = f"the store cannot be written{why}"
            raise StoreUnavailable(f"the store cannot be written: {exc}", summary) from exc
        if self._dialect.lock_timed_out(exc):
            held = "a row it needs is held by another session (a write stuck mid-transaction)"
            raise StoreUnavailable(f"{held}: {exc}", held) from exc
        if self._dialect.damaged(exc):
            log.error("the store is damaged (%s): restore it from a backup", exc)  # the operator's to act on
            raise StoreError(f"the store is damaged ({exc}): restore it from a backup") from exc

    def _check_fence(self, db: Db, fence: int) -> None:
        # FOR SHARE on PostgreSQL: a concurrent claim waits for this transaction, or this
        # read waits for the claim and sees its new epoch. SQLite has one writer at a time.
        row = db.one("SELECT epoch FROM leadership WHERE id = 1" + self._dialect.share_lock)
        current = None if row is None else int(row[0])
        if current != fence:
            raise FencedOut(f"fenced at epoch {fence}, but epoch {current} leads now")

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._reading(lambda db: db.one(sql, params))

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._reading(lambda db: db.all(sql, params))

    # Rows ---------------------------------------------------------------------------------

    def _row_to_job(self, row: Sequence[Any]) -> Job:
        # Parse each spec once (scans of a deep queue read many). A spec changes only when a
        # reload lowers a queued job's priority, maybe in another process: the text is compared.
        state = JobState(row[3])
        cached, reason = self._specs.get(row[0]), None
        if cached is not None and cached[0] == row[4]:
            spec = cached[1]
        else:
            spec, state, reason = self._job_spec(JobId(row[0]), state, row[4])
            if reason is None and state == JobState(row[3]):
                if len(self._specs) >= SPEC_CACHE_SIZE:
                    self._specs.clear()
                self._specs[row[0]] = (row[4], spec)
        dt = self._dialect.dt
        return Job(
            id=JobId(row[0]),
            tenant=TenantId(row[1]),
            client_id=row[2],
            state=state,
            spec=spec,
            created_at=dt(row[5]),
            updated_at=dt(row[6]),
            site=SiteId(row[7]) if row[7] else None,
            attempts=row[8],
            exit_code=row[9],
            log_tail=row[10],
            message=reason or row[11],
            policy_hash=row[12],
        )

    def _row_to_attempt(self, row: Sequence[Any]) -> Attempt:
        return attempt_from_row(row, self._dialect.dt)

    def _event_from_row(self, r: Sequence[Any]) -> JobEvent:
        return JobEvent(
            job_id=JobId(r[0]),
            seq=r[1],
            time=self._dialect.dt(r[2]),
            kind=r[3],
            state=JobState(r[4]),
            message=r[5],
            data=json.loads(r[6]),
        )

    @staticmethod
    def _job_row(db: Db, job_id: JobId) -> Row:
        row = db.one(f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        return row

    # Writes inside a transaction ----------------------------------------------------------

    def _lock_state(self, db: Db, job_id: JobId) -> JobState:
        """The job's state, its row locked until commit where the engine has row locks."""
        row = db.one("SELECT state FROM jobs WHERE id = ?" + self._dialect.row_lock, (job_id,))
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        return JobState(row[0])

    def _append_event(
        self,
        db: Db,
        job_id: JobId,
        now: datetime,
        kind: str,
        state: JobState,
        message: str,
        data: Mapping[str, Any] | None,
    ) -> JobEvent:
        # The row lock taken by this UPDATE makes seqs per job contiguous across processes.
        row = db.one("UPDATE jobs SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq", (job_id,))
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        seq: int = row[0]
        clean = self._dialect.param
        kind, message, payload = clean(kind), clean(message), dict(data or {})
        at = self._dialect.ts(now)
        # A job's event times never go back (a pass may write with the time it started at).
        prev = db.one("SELECT time FROM events WHERE job_id = ? AND seq = ?", (job_id, seq - 1))
        if prev is not None and prev[0] > at:
            at = prev[0]
        db.run(
            INSERT_EVENT,
            (job_id, seq, at, kind, state.value, message, json.dumps(payload, default=str), self._fence),
        )
        return JobEvent(
            job_id=job_id,
            seq=seq,
            time=self._dialect.dt(at),
            kind=kind,
            state=state,
            message=message,
            data=payload,
        )

    def _set_fields(
        self, db: Db, job_id: JobId, now: datetime, state: JobState | None, fields: Mapping[str, Any]
    ) -> None:
        unknown = set(fields) - JOB_FIELDS
        if unknown:
            raise StoreError(f"unknown job fields {sorted(unknown)}")
        sets = ["updated_at = ?"]
        params: list[Any] = [self._dialect.ts(now)]
        if state is not None:
            sets.append("state = ?")
            params.append(state.value)
        for key, value in fields.items():
            sets.append(f"{key} = ?")
            params.append(value)
        keys = queue_keys_of_text(fields["spec"]) if "spec" in fields else None
        if keys is not None:  # a priority lowered by a reload moves the job in its tenant's queue
            sets.extend(["priority_rank = ?", "queue_group = ?"])
            params.extend(keys)
        db.run(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", [*params, job_id])

    def _move(self, db: Db, job_id: JobId, old: JobState, now: datetime, move: JobMove) -> JobEvent | None:
        """Apply one state change inside the caller's transaction; None when `expect` differs."""
        if move.expect is not None and old != move.expect:
            return None
        check_transition(job_id, old, move.state)
        fields = dict(move.fields)
        if move.state == JobState.QUEUED:
            fields.setdefault("site", None)  # requeued: its last attempt's site is not where it is
        if move.message and "message" not in fields:
            fields["message"] = move.message
        self._set_fields(db, job_id, now, move.state, fields)
        at = move.at or now  # (still never before the job's previous event: see _append_event)
        return self._append_event(db, job_id, at, move.kind, move.state, move.message, move.data)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
