"""PostgreSQL store (psycopg 3): the shared, multi-process option.

psycopg is imported lazily: the broker runs without it until a `PostgresStore` is built.
"""

from __future__ import annotations

from broker.store._dialect import LOCK_WAIT_S, PostgresDialect

__all__ = ["LOCK_WAIT_S", "PostgresStore"]
from broker.store._sql import SqlStore


class PostgresStore(SqlStore):
    """One psycopg connection guarded by a lock, like SqliteStore; reconnects when broken."""

    def __init__(self, dsn: str, *, lock_wait_s: float = LOCK_WAIT_S) -> None:
        """`lock_wait_s`: how long a statement may wait for a row another session holds, before
        the call fails as unavailable (one connection per store: a wait holds every call)."""
        self.dsn = dsn
        super().__init__(PostgresDialect(dsn, lock_wait_s=lock_wait_s))
