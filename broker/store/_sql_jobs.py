"""Jobs and their event log in the SQL store: submit, read, list, move, record."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from broker.model import Job, JobEvent, JobId, JobState, TenantId
from broker.store._dialect import Db, marks
from broker.store._queue_keys import UNGROUPED, queue_keys, queue_keys_of_text
from broker.store._schema import EVENT_COLS, JOB_COLS
from broker.store._sql_core import SqlCore
from broker.store.base import UNFINISHED, JobMove, JobNotFoundError, JobPage, StoreError, Submission

_NEW_JOB_COLS = (
    "id, tenant, client_id, state, spec, created_at, updated_at, priority_rank, queue_group, last_seq"
)
_INSERT_JOB = f"INSERT INTO jobs ({_NEW_JOB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)"
_HAS_LABEL = "EXISTS (SELECT 1 FROM job_labels l WHERE l.key = ? AND l.value = ? AND l.job_id = j.id)"
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def by_states(where: str, params: list[Any], states: Sequence[JobState], limit: int) -> tuple[str, list[Any]]:
    """Jobs matching `where` in any of `states`, oldest first, at most `limit`.

    One index range on (state, id) per state, each with its own LIMIT, merged: flat however
    deep the queue and however many finished jobs sort before it (an IN list would make both
    engines walk the primary key, or sort every match, to find the oldest).
    """
    cols = ", ".join("j." + c.strip() for c in JOB_COLS.split(","))
    cond = f" AND {where}" if where else ""
    if len(states) <= 1:
        state = f"j.state = ?{cond}" if states else where or "1 = 1"
        sql = f"SELECT {cols} FROM jobs j WHERE {state} ORDER BY j.id LIMIT ?"
        return sql, [*(s.value for s in states), *params, limit]
    branch = f"SELECT * FROM (SELECT {cols} FROM jobs j WHERE j.state = ?{cond} ORDER BY j.id LIMIT ?) s"
    union = " UNION ALL ".join(f"{branch}{i}" for i in range(len(states)))
    sql = f"SELECT * FROM ({union}) u ORDER BY id LIMIT ?"
    return sql, [*(v for s in states for v in (s.value, *params, limit)), limit]


# Skip scans of the (state, tenant, queue_group, ...) index: each step seeks the next value, so a
# million queued jobs in a few groups cost a few probes, not a million index entries.
_QUEUED_TENANTS = """
WITH RECURSIVE t(tenant) AS (
  SELECT (SELECT j.tenant FROM jobs j WHERE j.state = ? ORDER BY j.tenant LIMIT 1)
  UNION ALL
  SELECT (SELECT j.tenant FROM jobs j WHERE j.state = ? AND j.tenant > t.tenant ORDER BY j.tenant LIMIT 1)
  FROM t WHERE t.tenant IS NOT NULL
)
SELECT tenant FROM t WHERE tenant IS NOT NULL
"""
_TENANT_GROUPS = """
WITH RECURSIVE g(grp, n) AS (
  SELECT (SELECT j.queue_group FROM jobs j WHERE j.state = ? AND j.tenant = ?
          ORDER BY j.queue_group LIMIT 1), 1
  UNION ALL
  SELECT (SELECT j.queue_group FROM jobs j WHERE j.state = ? AND j.tenant = ? AND j.queue_group > g.grp
          ORDER BY j.queue_group LIMIT 1), g.n + 1
  FROM g WHERE g.grp IS NOT NULL AND g.n < ?
)
SELECT grp FROM g WHERE grp IS NOT NULL
"""


class SqlJobs(SqlCore):
    """The job half of the store contract."""

    def submit(self, tenant: TenantId, items: Sequence[Submission], now: datetime) -> list[tuple[Job, bool]]:
        return self.submit_many([(tenant, items)], now)[0]

    def submit_many(
        self, groups: Sequence[tuple[TenantId, Sequence[Submission]]], now: datetime
    ) -> list[list[tuple[Job, bool]]]:
        out: list[list[tuple[Job, bool]]] = []
        fresh: list[Job] = []
        who: dict[str, dict[str, str]] = {}
        with self._tx() as db:
            # Ids in the order of submission; client ids claimed in one order, (tenant,
            # client_id), in every transaction: two batches sharing some (a retry sent to
            # another replica, in another order) wait for each other instead of deadlocking.
            ids = [[self.ids.next(now) for _ in items] for _, items in groups]
            slots = sorted(
                ((g, i) for g, (_, items) in enumerate(groups) for i in range(len(items))),
                key=lambda gi: (groups[gi[0]][0], groups[gi[0]][1][gi[1]].client_id or ""),
            )
            made: dict[tuple[int, int], tuple[Job, bool]] = {}
            for g, i in slots:
                tenant, items = groups[g]
                made[g, i] = self._insert(db, tenant, items[i], now, fresh, ids[g][i])
            fresh.sort(key=lambda job: job.id)
            for g, (_, items) in enumerate(groups):
                results = [made[g, i] for i in range(len(items))]
                who.update(
                    (job.id, item.event_data)
                    for item, (job, created) in zip(items, results, strict=True)
                    if created and (item.by or item.policy_hash)
                )
                out.append(results)
            self._insert_batch(db, fresh, now, who)
        if not self._listeners:  # nobody to tell (a bulk load): skip building the events
            self._flush_quarantine()
            return out
        self._publish(
            [
                JobEvent(
                    job_id=job.id,
                    seq=1,
                    time=now,
                    kind="submitted",
                    state=JobState.QUEUED,
                    message="job accepted",
                    data=who.get(job.id, {}),
                )
                for results in out
                for job, created in results
                if created
            ]
        )
        self._flush_quarantine()
        return out

    def _insert(
        self, db: Db, tenant: TenantId, item: Submission, now: datetime, fresh: list[Job], job_id: JobId
    ) -> tuple[Job, bool]:
        """A new job (inserted now when it has a client_id, else left in `fresh` for one batched
        insert), or the job an earlier submission with the same client_id made."""
        client_id = self._dialect.param(item.client_id) or None
        if client_id:
            existing = self._by_client_id(db, tenant, client_id)
            if existing is not None:
                return existing, False
        job = Job(
            id=job_id,
            tenant=tenant,
            spec=item.spec,
            client_id=client_id,
            created_at=now,
            updated_at=now,
        )
        if client_id is None:
            fresh.append(job)
            return job, True
        # ON CONFLICT: another broker process may commit the same client_id between the SELECT
        # above and this INSERT; the insert then waits for it and yields to it.
        ts = self._dialect.ts(now)
        row = db.one(
            f"{_INSERT_JOB} ON CONFLICT (tenant, client_id) WHERE client_id IS NOT NULL "
            "DO NOTHING RETURNING id",
            (job.id, tenant, client_id, JobState.QUEUED.value, item.spec.model_dump_json(), ts, ts,
             *queue_keys(item.spec)),
        )
        if row is None:
            existing = self._by_client_id(db, tenant, client_id)
            if existing is None:  # pragma: no cover - the conflicting row was committed
                raise StoreError(f"client_id {client_id!r} conflicted but is not visible")
            return existing, False
        self._insert_batch(db, [job], now, {job.id: item.event_data}, jobs_row=False)
        return job, True

    def jobs_by_client_id(self, tenant: TenantId, client_ids: Sequence[str]) -> dict[str, Job]:
        as_stored = {self._dialect.param(c): c for c in client_ids if c}  # (a NUL is stored escaped)
        wanted = sorted(as_stored)
        found: dict[str, Job] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            rows = self._all(
                f"SELECT {JOB_COLS} FROM jobs WHERE tenant = ? AND client_id IN ({marks(len(part))})",
                (tenant, *part),
            )
            found.update((as_stored.get(str(job.client_id), str(job.client_id)), job)
                         for job in map(self._row_to_job, rows))
        return found

    def _by_client_id(self, db: Db, tenant: TenantId, client_id: str) -> Job | None:
        row = db.one(f"SELECT {JOB_COLS} FROM jobs WHERE tenant = ? AND client_id = ?", (tenant, client_id))
        return None if row is None else self._row_to_job(row)

    def _insert_batch(
        self,
        db: Db,
        jobs: Sequence[Job],
        now: datetime,
        who: Mapping[str, dict[str, str]],
        *,
        jobs_row: bool = True,
    ) -> None:
        """The rows of new jobs (their labels and first event, with `who` submitted each) in a
        few batched statements."""
        ts = self._dialect.ts(now)
        if jobs_row:
            db.insert_rows(
                "jobs",
                _NEW_JOB_COLS,
                [
                    (j.id, j.tenant, j.client_id, JobState.QUEUED.value, j.spec.model_dump_json(), ts, ts,
                     *queue_keys(j.spec), 1)
                    for j in jobs
                ],
            )
        labels = [(j.id, k, v) for j in jobs for k, v in j.spec.labels.items()]
        db.insert_rows("job_labels", "job_id, key, value", labels)
        data = {job_id: json.dumps(d) for job_id, d in who.items() if d}  # ("{}": a bulk load's)
        first = [
            (j.id, 1, ts, "submitted", JobState.QUEUED.value, "job accepted", data.get(j.id, "{}"), None)
            for j in jobs
        ]
        db.insert_rows("events", f"{EVENT_COLS}, epoch", first)

    def get(self, job_id: str, tenant: TenantId | None = None) -> Job:
        row = self._one(f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
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
        for key, value in (labels or {}).items():
            where.append(_HAS_LABEL)
            params.extend([key, value])
        sql, params = by_states(" AND ".join(where), params, states, page_size + 1)
        rows = self._all(sql, params)
        jobs = [self._row_to_job(r) for r in rows[:page_size]]
        token = jobs[-1].id if len(rows) > page_size else ""
        self._flush_quarantine()
        if states:  # a quarantined job is FAILED now, whatever its row said
            jobs = [j for j in jobs if j.state in states]
        return JobPage(jobs=jobs, next_page_token=token)

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
        with self._tx(fenced=True) as db:
            event = self._move(db, job_id, self._lock_state(db, job_id), now, move)
            row = self._job_row(db, job_id)
        if event is not None:
            self._publish([event])
        job = self._row_to_job(row)
        self._flush_quarantine()
        return job

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
        with self._tx(fenced=True) as db:
            state = self._lock_state(db, job_id)
            self._set_fields(db, job_id, now, None, fields)
            event = self._append_event(db, job_id, now, kind, state, message, data)
            row = self._job_row(db, job_id)
        self._publish([event])
        job = self._row_to_job(row)
        self._flush_quarantine()
        return job

    def record_many(
        self, entries: Sequence[tuple[JobId, str, str, Mapping[str, Any]]], now: datetime
    ) -> None:
        events = []
        with self._tx(fenced=True) as db:
            for job_id, kind, message, data in entries:
                # The UPDATE locks the row (PostgreSQL) before the event reads its state.
                row = db.one("UPDATE jobs SET message = ? WHERE id = ? RETURNING state", (message, job_id))
                if row is None:
                    continue
                events.append(self._append_event(db, job_id, now, kind, JobState(row[0]), message, data))
        self._publish(events)

    def events_after(self, job_id: JobId, after_seq: int, limit: int = 1000) -> list[JobEvent]:
        rows = self._all(
            f"SELECT {EVENT_COLS} FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        )
        return [self._event_from_row(r) for r in rows]

    def run_times(self, job_ids: Sequence[JobId]) -> dict[JobId, tuple[datetime | None, datetime | None]]:
        if not job_ids:
            return {}
        rows = self._all(
            "SELECT job_id, MIN(CASE WHEN state = 'RUNNING' THEN time END), "
            f"MAX(CASE WHEN state IN ({', '.join(repr(s) for s in _TERMINAL)}) THEN time END) "
            f"FROM events WHERE job_id IN ({marks(len(job_ids))}) GROUP BY job_id",
            list(job_ids),
        )
        dt = self._dialect.dt
        return {
            JobId(r[0]): (dt(r[1]) if r[1] is not None else None, dt(r[2]) if r[2] is not None else None)
            for r in rows
        }

    def jobs_in_states(self, states: Sequence[JobState], limit: int = 10_000) -> list[Job]:
        if not states:
            return []
        rows = self._all(*by_states("", [], states, limit))
        jobs = [self._row_to_job(r) for r in rows]
        self._flush_quarantine()
        return [j for j in jobs if j.state in states]

    def queued_up_to(self, limit: int) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM (SELECT j.id FROM jobs j WHERE j.state = ? LIMIT ?) q",
            [JobState.QUEUED.value, limit],
        )
        return int(row[0]) if row is not None else 0

    def queued_tenants(self) -> list[TenantId]:
        queued = JobState.QUEUED.value
        return [TenantId(t) for (t,) in self._all(_QUEUED_TENANTS, [queued, queued])]

    def queue_groups(self, tenant: TenantId, limit: int) -> list[str]:
        queued = JobState.QUEUED.value
        return [str(g) for (g,) in self._all(_TENANT_GROUPS, [queued, tenant, queued, tenant, limit])]

    def group_heads(self, tenant: TenantId, groups: Sequence[str]) -> dict[str, tuple[int, str]]:
        out: dict[str, tuple[int, str]] = {}
        for group in groups:  # one index probe each
            row = self._one(
                "SELECT priority_rank, id FROM jobs WHERE state = ? AND tenant = ? AND queue_group = ? "
                "ORDER BY priority_rank, id LIMIT 1", [JobState.QUEUED.value, tenant, group],
            )
            if row is not None:
                out[group] = (int(row[0]), str(row[1]))
        return out

    def fill_queue_keys(self, tenant: TenantId, limit: int) -> int:
        rows = self._all(
            "SELECT id, spec FROM jobs WHERE state = ? AND tenant = ? AND queue_group = ? "
            "ORDER BY id LIMIT ?", [JobState.QUEUED.value, tenant, UNGROUPED, limit],
        )
        # An unreadable spec keeps no group: it is quarantined when the pass reads it.
        keyed = [(*keys, job_id) for job_id, spec in rows if (keys := queue_keys_of_text(spec))]
        if keyed:
            with self._tx() as db:
                db.many("UPDATE jobs SET priority_rank = ?, queue_group = ? "
                        "WHERE id = ? AND queue_group = ''", keyed)
        return len(keyed)

    def queue_head(self, tenant: TenantId, group: str, page_size: int, page_token: str = "") -> JobPage:
        where = "j.state = ? AND j.tenant = ? AND j.queue_group = ?"
        params: list[object] = [JobState.QUEUED.value, str(tenant), group]
        if page_token:
            rank, _, last = page_token.partition(":")
            where += " AND (j.priority_rank, j.id) > (?, ?)"
            params += [int(rank), last]
        cols = ", ".join("j." + c.strip() for c in JOB_COLS.split(","))
        rows = self._all(
            f"SELECT {cols}, j.priority_rank FROM jobs j WHERE {where} "
            "ORDER BY j.priority_rank, j.id LIMIT ?", [*params, page_size + 1]
        )
        jobs = [self._row_to_job(r[:-1]) for r in rows[:page_size]]
        token = f"{rows[page_size - 1][-1]}:{jobs[-1].id}" if len(rows) > page_size else ""
        self._flush_quarantine()
        return JobPage(jobs=[j for j in jobs if j.state == JobState.QUEUED], next_page_token=token)

    def count_by_state(self, tenant: TenantId | None = None) -> dict[JobState, int]:
        sql, params = "SELECT state, COUNT(*) FROM jobs", []
        if tenant is not None:
            sql, params = sql + " WHERE tenant = ?", [tenant]
        return {JobState(state): n for state, n in self._all(sql + " GROUP BY state", params)}

    def count_unfinished(self, tenant: TenantId) -> int:
        row = self._one(
            f"SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state IN ({marks(len(UNFINISHED))})",
            [tenant, *(s.value for s in UNFINISHED)],
        )
        return int(row[0]) if row is not None else 0
