"""SQLite (WAL) store: the embedded default."""

from __future__ import annotations

from pathlib import Path

from broker.store._dialect import SqliteDialect
from broker.store._sql import SqlStore


class SqliteStore(SqlStore):
    """One connection guarded by a lock; WAL so readers never block the writer.

    `synchronous=NORMAL` in WAL mode survives any crash of the broker process (the case the
    tests exercise); `durability="full"` also survives power loss at an fsync per commit.
    """

    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        self.path = str(path)
        super().__init__(SqliteDialect(self.path, durability))
