"""PostgreSQL store (psycopg 3): the shared, multi-process option.

psycopg is imported lazily: the broker runs without it until a `PostgresStore` is built.
"""

from __future__ import annotations

from broker.store._dialect import PostgresDialect
from broker.store._sql import SqlStore


class PostgresStore(SqlStore):
    """One psycopg connection guarded by a lock, like SqliteStore; reconnects when broken."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        super().__init__(PostgresDialect(dsn))
