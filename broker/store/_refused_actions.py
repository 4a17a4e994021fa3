"""Operator actions the broker refused (a tenant's drain, another tenant's job cancelled): who
tried what and why it was refused, for the audit trail (`refused_actions`, never updated), as
SQL with `?` placeholders. Job events would show them in the other tenant's watch, and the drain
log names no tenant and no refusal."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.store._audit import AuditFilter

REFUSED_ACTION = -2
"""`AuditCursor.source` of a refused action: at one time, after (older than) every other kind."""
ACTION_REFUSED = "action_refused"
"""The audit kind of a refused action."""
CANCEL = "cancel"
"""The action whose target is a job id (what `szb audit --job` finds)."""


@dataclass(frozen=True)
class RefusedAction:
    """One call refused: `action` (`drain`, `undrain`, `cancel`, or `unrecorded` for a count of
    those past the per-principal limit) of `target` (a site or a job id), answered `code`."""

    time: datetime
    tenant: str
    by: str
    role: str
    action: str
    target: str
    code: str
    reason: str
    id: int = field(default=0, compare=False)


_COLS = "time, tenant, by_name, role, action, target, code, reason"
INSERT = f"INSERT INTO refused_actions ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def row(a: RefusedAction, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    return (ts(a.time), a.tenant, a.by, a.role, a.action, a.target, a.code, a.reason)


def query(f: AuditFilter, ts: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
    """The newest refused actions matching `f` (a job filter finds refused cancels of that id)."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if f.job_id:
        where.append("action = ? AND target = ?")
        params += [CANCEL, f.job_id]
    if f.tenant:
        where.append("tenant = ?")
        params.append(f.tenant)
    for bound, op in ((f.since, ">="), (f.until, "<")):
        if bound is not None:
            where.append(f"time {op} ?")
            params.append(ts(bound))
    if (c := f.after) is not None:
        if c.source == REFUSED_ACTION:
            where.append("(time < ? OR (time = ? AND id < ?))")
            params += [ts(c.time), ts(c.time), c.seq]
        else:  # every other kind of the entry's time is newer than any refused action
            where.append("time <= ?")
            params.append(ts(c.time))
    sql = (f"SELECT {_COLS}, id FROM refused_actions WHERE {' AND '.join(where)} "
           "ORDER BY time DESC, id DESC LIMIT ?")
    return sql, [*params, f.limit]


def from_rows(rows: Sequence[Sequence[Any]], dt: Callable[[Any], datetime]) -> list[RefusedAction]:
    """Rows of `query`, oldest first."""
    out = [
        RefusedAction(dt(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]), str(r[7]),
                      id=int(r[8]))
        for r in rows
    ]
    out.reverse()
    return out
