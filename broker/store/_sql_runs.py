"""Run history in the SQL store: when running jobs started, how long finished ones ran.

The live wait projection (`broker.dispatch.waits`) reads these: the start of each running
on-prem job, and each tenant's recent runtimes against their estimates. Both are bounded
index reads (the events primary key per job; the partial `jobs_succeeded` index per tenant),
never a scan of the job table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from broker.burst.runtimes import work_s
from broker.model import JobId, SiteId, TenantId
from broker.store._dialect import marks
from broker.store._rows import read_spec
from broker.store._sql_core import SqlCore

RUNNING_KIND = "running"
"""The event kind of a job's move to RUNNING (`broker.dispatch.attempts`)."""
RUN_STARTS_CHUNK = 500
"""Job ids per `run_starts` query."""


class SqlRuns(SqlCore):
    """Run starts and recent runtimes (see the module docstring)."""

    def run_starts(self, job_ids: Sequence[JobId]) -> dict[JobId, datetime]:
        out: dict[JobId, datetime] = {}
        # Chunked: after a restart every running job is asked at once, and one IN list of
        # thousands of ids would pass SQLite's bound-parameter limit.
        for at in range(0, len(job_ids), RUN_STARTS_CHUNK):
            chunk = job_ids[at : at + RUN_STARTS_CHUNK]
            rows = self._all(
                f"SELECT job_id, MAX(time) FROM events WHERE job_id IN ({marks(len(chunk))}) "
                "AND kind = ? GROUP BY job_id",
                [*chunk, RUNNING_KIND],
            )
            out.update((JobId(r[0]), self._dialect.dt(r[1])) for r in rows if r[1] is not None)
        return out

    def recent_runtimes(self, tenant: TenantId, limit: int) -> list[tuple[float, float]]:
        # The literal state matches the partial index's predicate (a bound one would not).
        rows = self._all(
            "SELECT j.id, j.spec, MAX(CASE WHEN e.kind = ? THEN e.time END), "
            "MAX(CASE WHEN e.state = 'SUCCEEDED' THEN e.time END), SUM(CASE WHEN e.kind = ? THEN 1 END) "
            "FROM (SELECT id, spec FROM jobs WHERE tenant = ? AND state = 'SUCCEEDED' "
            "ORDER BY id DESC LIMIT ?) j JOIN events e ON e.job_id = j.id GROUP BY j.id, j.spec",
            [RUNNING_KIND, RUNNING_KIND, tenant, limit],
        )
        dt = self._dialect.dt
        out: list[tuple[str, float, float]] = []
        for job_id, text, started, ended, runs in rows:
            spec = read_spec(text)
            if isinstance(spec, str) or started is None or ended is None:
                continue
            ran = (dt(ended) - dt(started)).total_seconds()  # its last run: all its work, but ...
            if runs > 1 and spec.checkpoint is not None:  # ... one that resumed kept earlier runs' work
                ran = work_s(self._run_spans(str(job_id)), spec.checkpoint.interval.total_seconds())
            out.append((str(job_id), spec.runtime_estimate.total_seconds(), ran))
        out.sort(reverse=True)
        return [(est, ran) for _, est, ran in out]

    def _run_spans(self, job_id: str) -> list[float]:
        """Seconds of each of a job's runs, oldest first: from each move to RUNNING to its next
        move to another state (the events primary key: one job's rows)."""
        spans: list[float] = []
        start: datetime | None = None
        dt = self._dialect.dt
        rows = self._all("SELECT time, state FROM events WHERE job_id = ? ORDER BY seq", [job_id])
        for time, state in rows:
            if state == "RUNNING":
                start = start or dt(time)
            elif start is not None:
                spans.append((dt(time) - start).total_seconds())
                start = None
        return spans

    def attempt_times(
        self, sites: Sequence[SiteId], since: datetime, tenant: TenantId | None = None
    ) -> list[datetime]:
        if not sites:
            return []
        mine = "" if tenant is None else " AND job_id IN (SELECT id FROM jobs WHERE tenant = ?)"
        rows = self._all(
            f"SELECT created_at FROM attempts WHERE site IN ({marks(len(sites))}) AND created_at >= ?"
            f" AND backend_id IS NOT NULL{mine} ORDER BY created_at",
            [*sites, self._dialect.ts(since), *([] if tenant is None else [tenant])],
        )
        return [self._dialect.dt(r[0]) for r in rows]

    def launch_times(self, site: SiteId, limit: int) -> list[float]:
        # Each attempt's job's first move to RUNNING after the attempt began and before the job's
        # next attempt began (a later attempt's run is not this one's). The `attempts_site`
        # index reads the site's newest attempts; the events primary key each one's job.
        rows = self._all(
            "SELECT a.created_at, (SELECT MIN(e.time) FROM events e WHERE e.job_id = a.job_id "
            "AND e.kind = ? AND e.time >= a.created_at AND NOT EXISTS (SELECT 1 FROM attempts b "
            "WHERE b.job_id = a.job_id AND b.number > a.number AND b.created_at <= e.time)) "
            "FROM attempts a WHERE a.site = ? ORDER BY a.created_at DESC LIMIT ?",
            [RUNNING_KIND, site, limit],
        )
        dt = self._dialect.dt
        return [(dt(r[1]) - dt(r[0])).total_seconds() for r in reversed(rows) if r[1] is not None]
