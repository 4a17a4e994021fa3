"""The audit trail's SQL: policy versions, audit events, refused submissions, queue depth
(`?` placeholders)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.model import JobEvent, JobId, JobState, TenantId

AUDIT_KINDS = (
    "submitted",
    "cancelled",
    "cancel_requested",
    "cancel_too_late",
    "placed",
    "rejected",
    "gave_up",
    "budget",
    "attempt_failed",
    "lost",
    "preempted",
    "finished",
    "quarantined",
)
"""Event kinds the audit view shows: who asked for what, and what the broker decided (a job whose
stored spec no longer reads is failed as `quarantined`: the audit said only `submitted`).
(`refused`, a submission refused by policy, has no job and so no event: `refused_submissions`.)"""

REFUSED = "refused"
"""The audit kind of a submission refused by policy (no allowed offer) at the door."""
KEEP_REFUSALS = 10_000
"""Refused submissions kept per tenant (the newest): a tenant flooding refusals stays bounded."""

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
    inputs: str = ""
    """sha256 over the files the policy refers to (accelerators, regimes, price catalogs) as
    loaded ('' when refused)."""
    files: tuple[tuple[str, str], ...] = ()
    """(name, text) of each of those files as loaded; none when refused or stored before they were."""


@dataclass(frozen=True)
class RefusedSubmission:
    """A job refused at submit for want of an allowed offer: no job row, only this record."""

    time: datetime
    tenant: TenantId
    by: str
    """The submitting token's name ('' when it has none: the tenant itself)."""
    role: str
    job_name: str
    message: str
    rules: tuple[str, ...]
    policy_hash: str
    spec: str
    """The spec as JSON, secrets masked as the logs mask them."""
    id: int = field(default=0, compare=False)
    """The store's row id (0 until stored): orders refusals of one time."""


EVENT, ACCESS, REFUSAL = 2, 1, 0
"""`AuditCursor.source`: at one time, jobs' events are newest, then access changes, then refusals."""


@dataclass(frozen=True)
class AuditCursor:
    """A place in the audit trail's newest-first order (time, source, job id, seq or refusal id):
    a page token names the oldest entry of its page, and the next page is what comes after it."""

    time: datetime
    source: int
    job_id: str = ""
    seq: int = 0
    """The event's seq, or the refusal's row id."""


@dataclass(frozen=True)
class TokenSet:
    """A tokens file as put in force: each entry's (key, tenant, role, name), no secret."""

    time: datetime
    source: str
    entries: tuple[tuple[str, str, str, str], ...]
    """(key: `sha256:` and 12 hex digits of the token's hash, or `cn:` and a certificate's common
    name; tenant; role; name), sorted."""
    id: int = field(default=0, compare=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.entries).encode()).hexdigest()


@dataclass(frozen=True)
class AuditFilter:
    job_id: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    limit: int = 1000
    until: datetime | None = None
    """Only entries before this time."""
    after: AuditCursor | None = None
    """Only entries older than this one (the page after a page)."""


# Not when the newest entry says the same already: in HA every process loads the file (and a
# restart loads it again), and the history listed each load once per process.
INSERT_POLICY = (
    "INSERT INTO policy_versions (hash, result, source, content, errors, time, inputs, files) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM policy_versions WHERE "
    "id = (SELECT MAX(id) FROM policy_versions) AND hash = ? AND result = ? AND inputs = ?)"
)
_POLICY_COLS = "hash, result, source, content, errors, time, inputs, files"
LIST_POLICIES = f"SELECT {_POLICY_COLS} FROM policy_versions ORDER BY id DESC LIMIT ?"
# Loaded versions before refused ones with the same prefix, newest first.
FIND_POLICY = (
    f"SELECT {_POLICY_COLS} FROM policy_versions WHERE hash >= ? AND hash < ? "
    "ORDER BY CASE WHEN result = 'refused' THEN 1 ELSE 0 END, id DESC LIMIT 1"
)
POLICY_HASHES = (
    "SELECT DISTINCT hash FROM policy_versions WHERE hash >= ? AND hash < ? ORDER BY hash LIMIT ?"
)
ACTIVE_COUNTS = (
    "SELECT state, COALESCE(site, ''), tenant, COUNT(*) FROM jobs "
    f"WHERE state IN ({', '.join(repr(s) for s in ACTIVE_STATES)}) GROUP BY state, site, tenant"
)


def policy_row(v: PolicyVersion, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """`INSERT_POLICY`'s parameters."""
    return (v.hash, v.result, v.source, v.content, json.dumps(list(v.errors)), ts(v.time), v.inputs,
            json.dumps([list(f) for f in v.files]) if v.files else "", v.hash, v.result, v.inputs)


def policy_from_row(r: Sequence[Any], dt: Callable[[Any], datetime]) -> PolicyVersion:
    return PolicyVersion(
        hash=r[0], result=r[1], source=r[2], content=r[3], errors=tuple(json.loads(r[4])), time=dt(r[5]),
        inputs=r[6] or "", files=tuple((str(n), str(t)) for n, t in json.loads(r[7] or "[]")),
    )


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) of hex hashes starting with `prefix` (a range uses the index; LIKE may not)."""
    return prefix, prefix + "g"


def _window(
    f: AuditFilter, column: str, where: list[str], params: list[Any], ts: Callable[[datetime], Any]
) -> None:
    """`f`'s since (inclusive) and until (exclusive) on `column`, added to a query's conditions."""
    for bound, op in ((f.since, ">="), (f.until, "<")):
        if bound is not None:
            where.append(f"{column} {op} ?")
            params.append(ts(bound))


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
    _window(f, "e.time", where, params, ts)
    if (c := f.after) is not None:
        if c.source == EVENT:
            where.append("(e.time < ? OR (e.time = ? AND (e.job_id < ? OR (e.job_id = ? AND e.seq < ?))))")
            params += [ts(c.time), ts(c.time), c.job_id, c.job_id, c.seq]
        else:  # every event of the entry's time came before it
            where.append("e.time < ?")
            params.append(ts(c.time))
    sql = (
        "SELECT e.job_id, e.seq, e.time, e.kind, e.state, e.message, e.data, j.tenant "
        "FROM events e JOIN jobs j ON j.id = e.job_id "
        f"WHERE {' AND '.join(where)} ORDER BY e.time DESC, e.job_id DESC, e.seq DESC LIMIT ?"
    )
    params.append(f.limit)
    return sql, params


_REFUSAL_COLS = "time, tenant, by_name, role, job_name, message, rules, policy_hash, spec"
INSERT_REFUSAL = f"INSERT INTO refused_submissions ({_REFUSAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Everything of the tenant's older than its `keep`-th newest: one index range, no count.
PRUNE_REFUSALS = (
    "DELETE FROM refused_submissions WHERE tenant = ? AND id <= ("
    "SELECT id FROM refused_submissions WHERE tenant = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


def refusal_row(r: RefusedSubmission, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    return (ts(r.time), r.tenant, r.by, r.role, r.job_name, r.message, json.dumps(list(r.rules)),
            r.policy_hash, r.spec)


def refusal_query(f: AuditFilter, ts: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
    """The newest refusals matching the filter (none has a job id, so a job filter finds none)."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if f.job_id:
        where.append("1 = 0")
    if f.tenant:
        where.append("tenant = ?")
        params.append(f.tenant)
    _window(f, "time", where, params, ts)
    if (c := f.after) is not None:
        if c.source < REFUSAL:  # a drain change or refused action: every refusal of its time came before
            where.append("time < ?")
            params.append(ts(c.time))
        elif c.source != REFUSAL:  # every refusal of the entry's time comes after it
            where.append("time <= ?")
            params.append(ts(c.time))
        else:
            where.append("(time < ? OR (time = ? AND id < ?))")
            params += [ts(c.time), ts(c.time), c.seq]
    sql = (f"SELECT {_REFUSAL_COLS}, id FROM refused_submissions WHERE {' AND '.join(where)} "
           "ORDER BY time DESC, id DESC LIMIT ?")
    return sql, [*params, f.limit]


def refusals_from_rows(
    rows: Sequence[Sequence[Any]], dt: Callable[[Any], datetime]
) -> list[RefusedSubmission]:
    """Rows of `refusal_query`, oldest first."""
    out = [
        RefusedSubmission(
            time=dt(r[0]), tenant=TenantId(r[1]), by=r[2], role=r[3], job_name=r[4], message=r[5],
            rules=tuple(json.loads(r[6])), policy_hash=r[7], spec=r[8], id=int(r[9]),
        )
        for r in rows
    ]
    out.reverse()
    return out


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


# Not when the newest set is the same: every HA process and every restart puts the file in force.
INSERT_TOKEN_SET = (
    "INSERT INTO token_sets (time, source, digest, entries) SELECT ?, ?, ?, ? WHERE NOT EXISTS ("
    "SELECT 1 FROM token_sets WHERE id = (SELECT MAX(id) FROM token_sets) AND digest = ?)"
)
MAX_TOKEN_SETS = 10_000
"""Token sets read for one audit page (a tokens file changes by hand: rarely)."""


def token_set_row(t: TokenSet, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    digest = t.digest  # (the insert's value and its "not the newest already" test)
    return (ts(t.time), t.source, digest, json.dumps([list(e) for e in t.entries]), digest)


def token_sets_query(f: AuditFilter, ts: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
    """Token sets in `f`'s time window, newest first, and the one before the oldest (what it
    changed is read against it): `id >= ` the newest set before the window."""
    where: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        where.append("id >= COALESCE((SELECT MAX(id) FROM token_sets WHERE time < ?), 0)")
        params.append(ts(f.since))
    if f.until is not None:
        where.append("time < ?")
        params.append(ts(f.until))
    if f.after is not None:
        where.append("time <= ?")
        params.append(ts(f.after.time))
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    sql = f"SELECT id, time, source, entries FROM token_sets {clause}ORDER BY id DESC LIMIT ?"
    return sql, [*params, MAX_TOKEN_SETS + 1]


def token_sets_from_rows(rows: Sequence[Sequence[Any]], dt: Callable[[Any], datetime]) -> list[TokenSet]:
    """Rows of `token_sets_query`, oldest first."""
    out = [
        TokenSet(time=dt(r[1]), source=r[2], entries=tuple(tuple(e) for e in json.loads(r[3])), id=int(r[0]))
        for r in rows
    ]
    out.reverse()
    return out
