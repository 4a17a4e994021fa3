"""Read-only copies of a store, for tools that must never write to it (`szb policy replay`, `szb backup`).

An SQLite store is copied with SQLite's online backup, which a running broker's writes do not
disturb (`copy_sqlite`).

Opening a `PostgresStore` creates or brings its schema up to date: a write, refused to a role
that may only read, done to whatever database a mistyped DSN names, and done to a store an
older broker still runs on. Instead, the tables history is read from are copied, in one
read-only REPEATABLE READ transaction (one consistent view while a broker keeps writing; the
server refuses any write), into a fresh SQLite store of the current schema. Columns an older
schema lacks keep their defaults there; tables it lacks stay empty.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.logs import URL_PASSWORD
from broker.store._dialect import connect_timeout
from broker.store.base import StoreError
from broker.store.sqlite import SqliteStore

TABLES = (
    "jobs", "job_labels", "events", "attempts", "policy_versions", "refused_submissions", "token_sets"
)
"""What history is read from (jobs, their runs and launches, the policy versions loaded, the
submissions refused at the door)."""
BATCH = 2000

_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


class SnapshotError(StoreError):
    """The store cannot be read (unreachable, refused, not a broker store); one line, DSN redacted."""


def copy_sqlite(db: Path, dest: Path) -> None:
    """Copy the SQLite store `db` to `dest` (a new file) as of one instant, never writing to `db`.

    Raises FileNotFoundError when there is no store, OSError when it cannot be read or is no
    broker store.
    """
    if not db.is_file():  # never create an empty store where the user expected one
        raise FileNotFoundError(f"no broker store at {db}")
    wal, shm = (db.with_name(db.name + suffix) for suffix in ("-wal", "-shm"))
    try:
        if not wal.exists():
            # No broker has the store open: read it as immutable, which leaves no -wal/-shm behind.
            _backup(f"file:{urllib.parse.quote(str(db.resolve()))}?immutable=1", dest)
        elif not shm.exists():
            _backup_private_copy(db, wal, dest)  # a -wal alone: left by a broker that stopped
        else:
            # A broker has it open (or stopped without a checkpoint): a read-only connection sees
            # what was committed. In a folder it may not write, read a private copy instead.
            try:
                _backup(f"file:{urllib.parse.quote(str(db.resolve()))}?mode=ro", dest)
            except sqlite3.Error:
                dest.unlink(missing_ok=True)
                _backup_private_copy(db, wal, dest)
    except sqlite3.Error as exc:
        raise OSError(f"cannot read the broker store at {db}: {exc}") from exc
    with closing(sqlite3.connect(dest)) as copy:
        tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "jobs" not in tables:
        dest.unlink(missing_ok=True)
        raise OSError(f"no broker store at {db}: the SQLite file has no jobs table")


def _backup(uri: str, dest: Path) -> None:
    with closing(sqlite3.connect(uri, uri=True)) as src, closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)


def _backup_private_copy(db: Path, wal: Path, dest: Path) -> None:
    """Read the store and its -wal from a copy of both in a private folder: opening them in place
    would create a -shm beside the store (SQLite needs one to read a -wal) or fail where the
    folder is read-only. Only when no broker has the store open (no -shm), or it cannot be read."""
    with tempfile.TemporaryDirectory(prefix="szb-read-") as folder:
        copy = Path(folder) / db.name
        shutil.copyfile(db, copy)
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        _backup(f"file:{urllib.parse.quote(str(copy))}", dest)


def redact(dsn: str) -> str:
    """The DSN as it may be printed: any password replaced by `***` (URL or key=value form)."""
    dsn = URL_PASSWORD.sub(r"\1***@", dsn)
    dsn = _QUERY_PASSWORD.sub(r"\1***", dsn)
    return _KV_PASSWORD.sub(r"\1***", dsn)


def copy_postgres(dsn: str, dest: Path, since: datetime | None = None) -> None:
    """Copy the store at `dsn` (jobs submitted at or after `since`, with their rows) into `dest`."""
    SqliteStore(dest).close()  # the current schema, empty
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SnapshotError("reading a PostgreSQL store needs psycopg: pip install psycopg") from exc
    where = redact(dsn)
    try:
        source = psycopg.connect(connect_timeout(dsn))
        with closing(source) as conn, closing(sqlite3.connect(dest)) as out:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                columns = _columns(conn)
                if "jobs" not in columns:
                    raise SnapshotError(f"no broker store at {where}: its database has no jobs table")
                for table in TABLES:
                    if table in columns:
                        _copy_table(conn, out, table, columns[table], since)
            out.commit()
    except psycopg.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise SnapshotError(
            f"cannot read the store at {where}: {lines[0] if lines else type(exc).__name__}"
        ) from exc


def _columns(conn: Any) -> dict[str, set[str]]:
    """Table -> its columns, in the connection's schema (pg_catalog: readable whatever the grants)."""
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') "
        "AND a.attnum > 0 AND NOT a.attisdropped"
    ).fetchall()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return out


def _copy_table(
    conn: Any, out: sqlite3.Connection, table: str, source: set[str], since: datetime | None
) -> None:
    wanted = [r[1] for r in out.execute(f"PRAGMA table_info({table})")]
    cols = [c for c in wanted if c in source]
    sql, params = f"SELECT {', '.join(cols)} FROM {table}", list[datetime]()
    if since is not None and table == "jobs":
        sql, params = f"{sql} WHERE created_at >= %s", [since]
    elif since is not None and table == "refused_submissions":
        sql, params = f"{sql} WHERE time >= %s", [since]
    elif since is not None and "job_id" in source:
        sql, params = f"{sql} WHERE job_id IN (SELECT id FROM jobs WHERE created_at >= %s)", [since]
    insert = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    with conn.cursor(name=f"szb_snapshot_{table}") as cur:  # server-side: streamed, not all in memory
        cur.itersize = BATCH
        cur.execute(sql, params)
        for rows in _batches(cur):
            out.executemany(insert, [[_value(v) for v in row] for row in rows])


def _batches(cur: Any) -> Iterator[Sequence[Any]]:
    while rows := cur.fetchmany(BATCH):
        yield rows


def _value(v: Any) -> Any:
    """A PostgreSQL value as the SQLite store keeps it (times as epoch seconds, booleans as 0/1)."""
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, bool):
        return int(v)
    return v
