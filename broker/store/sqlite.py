"""SQLite (WAL) store: the embedded default."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from broker.store._dialect import SqliteDialect
from broker.store._sql import SqlStore
from broker.store.base import StoreError

FULL_BELOW_BYTES = 1 << 20
"""Less free space than this on the store's disk when it will not open: the disk is full."""


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
        if self.path != ":memory:" and os.path.isfile(self.path) and not _writable(self.path):
            # Left by a crash, the -wal and -shm files let SQLite open the store read-only, and
            # the broker's first write would say only "attempt to write a readonly database".
            why = _why(self.path, PermissionError()) or " (the file is not writable by this user)"
            raise StoreError(f"store {self.path}: the store cannot be written{why}")
        try:
            super().__init__(SqliteDialect(self.path, durability))
        except (sqlite3.DatabaseError, StoreError) as exc:  # SQLite's text names neither file nor cause
            cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.DatabaseError) else exc
            raise StoreError(f"store {self.path}: {cause}{_why(self.path, cause)}") from exc


def _writable(path: str) -> bool:
    """The store file and its folder (for the -wal and -shm files) can be written."""
    return os.access(path, os.W_OK) and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)


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
        disk = os.statvfs(folder)
    except OSError as err:
        return f" ({folder}: {err.strerror})"
    if disk.f_flag & os.ST_RDONLY:
        return f" ({folder} is on a read-only file system)"
    free = disk.f_bavail * disk.f_frsize
    # A full disk reads as SQLITE_FULL for a new store, but as a bare "disk I/O error" for a kept
    # one (its -wal and -shm files cannot be made): the free space tells them apart.
    if name == "SQLITE_FULL" or free < FULL_BELOW_BYTES:
        return (
            f" (the data dir {folder} is on a full disk, {free} bytes free: free space there, or move"
            " the data dir with broker.db and its -wal and -shm files to a disk with room and point"
            " data_dir in broker.yaml (or SZB_DATA_DIR) at it; then start szb serve again)"
        )
    if not os.access(folder, os.W_OK):
        return f" ({folder} is not writable by this user)"
    return ""
