"""The leadership lease: who holds the scheduler role, until when, under which epoch.

`SqlLeaseBook` keeps it in a one-row table on the elector's own connection. A store that
offers `claim_leadership`/`renew_leadership`/`leadership` (and so can fence its writes by
epoch) is used instead: see `lease_book`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class LeaseRow:
    """The current leadership: holder name, its election session's backend pid, epoch, expiry."""

    holder: str
    backend_pid: int
    epoch: int
    expires_at: datetime


class LeaseBook(Protocol):
    def claim_leadership(self, holder: str, backend_pid: int, lease_s: float, now: datetime) -> int:
        """Take the lease (the caller holds the advisory lock); returns the new, higher epoch."""

    def renew_leadership(self, holder: str, epoch: int, lease_s: float, now: datetime) -> bool:
        """Extend the lease; False when `epoch` is no longer the current one."""

    def leadership(self) -> LeaseRow | None:
        """The current lease, if anyone ever held one."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS ha_leadership (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, backend_pid INTEGER NOT NULL,
  epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL
)
"""


class SqlLeaseBook:
    """The lease as one row of `ha_leadership`, read and written on the given connection."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn
        conn.execute(SCHEMA)

    def claim_leadership(self, holder: str, backend_pid: int, lease_s: float, now: datetime) -> int:
        row = self.conn.execute(
            "INSERT INTO ha_leadership (name, holder, backend_pid, epoch, expires_at)"
            " VALUES ('scheduler', %s, %s, 1, %s) ON CONFLICT (name) DO UPDATE SET"
            " holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid,"
            " epoch = ha_leadership.epoch + 1, expires_at = EXCLUDED.expires_at RETURNING epoch",
            (holder, backend_pid, now + timedelta(seconds=lease_s)),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def renew_leadership(self, holder: str, epoch: int, lease_s: float, now: datetime) -> bool:
        row = self.conn.execute(
            "UPDATE ha_leadership SET expires_at = %s"
            " WHERE name = 'scheduler' AND holder = %s AND epoch = %s RETURNING epoch",
            (now + timedelta(seconds=lease_s), holder, epoch),
        ).fetchone()
        return row is not None

    def leadership(self) -> LeaseRow | None:
        row = self.conn.execute(
            "SELECT holder, backend_pid, epoch, expires_at FROM ha_leadership WHERE name = 'scheduler'"
        ).fetchone()
        if row is None:
            return None
        return LeaseRow(row[0], int(row[1]), int(row[2]), row[3].astimezone(UTC))
