"""Sites an operator drained: the drains in force (`site_drains`) and their history for the
audit trail (`site_drain_log`, never updated), as SQL with `?` placeholders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.store._audit import AuditFilter

DRAIN = -1
"""`AuditCursor.source` of a drain entry: at one time, after (older than) every other kind."""
DRAINED, UNDRAINED = "drained", "undrained"
"""The audit kinds of a drain put in force (or its reason changed) and of one lifted."""


@dataclass(frozen=True)
class SiteDrain:
    """A site out of service by an operator's hand: no new placements there."""

    site: str
    by: str
    reason: str
    since: datetime


@dataclass(frozen=True)
class DrainChange:
    """One entry of the drain history: `drained` (with the drain's reason) or `undrained`."""

    time: datetime
    site: str
    action: str
    by: str
    reason: str
    id: int = field(default=0, compare=False)


SITE_DRAINS = "SELECT site, by_name, reason, since FROM site_drains ORDER BY site"
FIND_DRAIN = "SELECT site, by_name, reason, since FROM site_drains WHERE site = ?"
PUT_DRAIN = (
    "INSERT INTO site_drains (site, by_name, reason, since) VALUES (?, ?, ?, ?) ON CONFLICT (site) "
    "DO UPDATE SET by_name = excluded.by_name, reason = excluded.reason, since = excluded.since"
)
DROP_DRAIN = "DELETE FROM site_drains WHERE site = ?"
LOG_DRAIN = "INSERT INTO site_drain_log (time, site, action, by_name, reason) VALUES (?, ?, ?, ?, ?)"


def drain_from_row(r: Sequence[Any], dt: Callable[[Any], datetime]) -> SiteDrain:
    return SiteDrain(site=str(r[0]), by=str(r[1]), reason=str(r[2]), since=dt(r[3]))


def log_query(f: AuditFilter, ts: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
    """The newest drain changes in `f`'s window: none for a job or a tenant (a site's concern)."""
    where: list[str] = ["1 = 0" if f.job_id or f.tenant else "1 = 1"]
    params: list[Any] = []
    for bound, op in ((f.since, ">="), (f.until, "<")):
        if bound is not None:
            where.append(f"time {op} ?")
            params.append(ts(bound))
    if (c := f.after) is not None:
        if c.source == DRAIN:
            where.append("(time < ? OR (time = ? AND id < ?))")
            params += [ts(c.time), ts(c.time), c.seq]
        elif c.source < DRAIN:  # a refused action: every drain change of its time came before it
            where.append("time < ?")
            params.append(ts(c.time))
        else:  # every other kind of the entry's time is newer than any drain change
            where.append("time <= ?")
            params.append(ts(c.time))
    sql = (f"SELECT time, site, action, by_name, reason, id FROM site_drain_log WHERE {' AND '.join(where)} "
           "ORDER BY time DESC, id DESC LIMIT ?")
    return sql, [*params, f.limit]


def log_from_rows(rows: Sequence[Sequence[Any]], dt: Callable[[Any], datetime]) -> list[DrainChange]:
    """Rows of `log_query`, oldest first."""
    out = [DrainChange(dt(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5])) for r in rows]
    out.reverse()
    return out
