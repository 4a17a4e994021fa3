"""The audit trail's SQL: policy versions, audit events, queue depth (`?` placeholders)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.model import JobEvent, JobId, JobState, TenantId

AUDIT_KINDS = (
    "submitted",
    "cancelled",
    "placed",
    "rejected",
    "gave_up",
    "budget",
    "attempt_failed",
    "lost",
    "preempted",
    "finished",
)
"""Event kinds the audit view shows: who asked for what, and what the broker decided."""

ACTIVE_STATES = ("QUEUED", "PLACING", "PROVISIONING", "RUNNING", "PREEMPTED")


@dataclass(frozen=True)
class PolicyVersion:
    """A policy file the broker loaded or refused, as stored for the audit trail."""

    hash: str
    result: str
    """`loaded`, `unchanged` or `refused`."""
    source: str
    content: str
    time: datetime
    errors: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class AuditFilter:
    job_id: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    limit: int = 1000


INSERT_POLICY = (
    "INSERT INTO policy_versions (hash, result, source, content, errors, time) VALUES (?, ?, ?, ?, ?, ?)"
)
_POLICY_COLS = "hash, result, source, content, errors, time"
LIST_POLICIES = f"SELECT {_POLICY_COLS} FROM policy_versions ORDER BY id DESC LIMIT ?"
# Loaded versions before refused ones with the same prefix, newest first.
FIND_POLICY = (
    f"SELECT {_POLICY_COLS} FROM policy_versions WHERE hash >= ? AND hash < ? "
    "ORDER BY CASE WHEN result = 'refused' THEN 1 ELSE 0 END, id DESC LIMIT 1"
)
ACTIVE_COUNTS = (
    "SELECT state, COALESCE(site, ''), tenant, COUNT(*) FROM jobs "
    f"WHERE state IN ({', '.join(repr(s) for s in ACTIVE_STATES)}) GROUP BY state, site, tenant"
)


def policy_row(v: PolicyVersion, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    return (v.hash, v.result, v.source, v.content, json.dumps(list(v.errors)), ts(v.time))


def policy_from_row(r: Sequence[Any], dt: Callable[[Any], datetime]) -> PolicyVersion:
    return PolicyVersion(
        hash=r[0], result=r[1], source=r[2], content=r[3], errors=tuple(json.loads(r[4])), time=dt(r[5])
    )


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) of hex hashes starting with `prefix` (a range uses the index; LIKE may not)."""
    return prefix, prefix + "g"


def audit_query(f: AuditFilter, ts: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
    """Newest audit events first, matching the filter; rows end with the job's tenant."""
    where = [f"e.kind IN ({', '.join('?' for _ in AUDIT_KINDS)})"]
    params: list[Any] = list(AUDIT_KINDS)
    if f.job_id:
        where.append("e.job_id = ?")
        params.append(f.job_id)
    if f.tenant:
        where.append("j.tenant = ?")
        params.append(f.tenant)
    if f.since is not None:
        where.append("e.time >= ?")
        params.append(ts(f.since))
    sql = (
        "SELECT e.job_id, e.seq, e.time, e.kind, e.state, e.message, e.data, j.tenant "
        "FROM events e JOIN jobs j ON j.id = e.job_id "
        f"WHERE {' AND '.join(where)} ORDER BY e.time DESC, e.job_id DESC, e.seq DESC LIMIT ?"
    )
    params.append(f.limit)
    return sql, params


def audit_from_rows(
    rows: Sequence[Sequence[Any]], dt: Callable[[Any], datetime]
) -> list[tuple[TenantId, JobEvent]]:
    """Rows of `audit_query` as (tenant, event), oldest first."""
    out = [
        (
            TenantId(r[7]),
            JobEvent(
                job_id=JobId(r[0]),
                seq=r[1],
                time=dt(r[2]),
                kind=r[3],
                state=JobState(r[4]),
                message=r[5],
                data=json.loads(r[6]),
            ),
        )
        for r in rows
    ]
    out.reverse()
    return out
