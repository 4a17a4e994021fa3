"""SQLite (WAL) store: the embedded default."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from broker.store._dialect import SqliteDialect
from broker.store._sql import SqlStore
from broker.store.base import StoreError


class SqliteStore(SqlStore):
    """One connection guarded by a lock; WAL so readers never block the writer.

    `synchronous=NORMAL` in WAL mode survives any crash of the broker process (the case the
    tests exercise); `durability="full"` also survives power loss at an fsync per commit.
    """

    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        self.path = str(path)
        if self.path != ":memory:" and os.path.isfile(self.path) and os.path.getsize(self.path) == 0:
            # SQLite takes an empty file for a new database: every job, attempt and spend would
            # be gone without a word (and the reconciler would take running instances for orphans).
            raise StoreError(
                f"store {self.path}: the file is empty (0 bytes), but a store is never empty once"
                " made: it was cut or zeroed; restore it from a backup, or delete it to start with"
                " an empty store"
            )
        try:
            super().__init__(SqliteDialect(self.path, durability))
        except (sqlite3.DatabaseError, StoreError) as exc:  # SQLite's text names neither file nor cause
            cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.DatabaseError) else exc
            raise StoreError(f"store {self.path}: {cause}{_why(self.path, cause)}") from exc


def _why(path: str, exc: BaseException) -> str:
    """What an operator should know about a store file that would not open."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return (
            " (the file is damaged: restore it from a backup, or move it and its -wal and -shm"
            " files aside to start with an empty store)"
        )
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f" ({folder} is on a read-only file system)"
    except OSError as err:
        return f" ({folder}: {err.strerror})"
    if not os.access(folder, os.W_OK):
        return f" ({folder} is not writable by this user)"
    return ""
