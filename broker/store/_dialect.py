"""What differs between SQLite and PostgreSQL for the one SQL store: connections, transactions,
placeholders, column types, time values, text cleaning, locks and schema introspection.

Queries are written once with `?` placeholders; `Db` (a connection inside the store's lock)
hands them to the dialect, which turns them into its own placeholders.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]


class Dialect(abc.ABC):
    """One database engine's side of the store."""

    name: str
    types: Mapping[str, str]
    """Schema placeholders (`{time}`, `{key}`...) and what they mean for this engine."""
    row_lock = ""
    """Suffix of a SELECT that locks the rows it reads until commit (a single writer needs none)."""
    share_lock = ""
    """Suffix of a SELECT that keeps the rows it reads from changing until commit."""

    @abc.abstractmethod
    def connect(self) -> Any:
        """A new connection in autocommit mode (transactions are explicit)."""

    def broken(self, conn: Any) -> bool:
        """True when `conn` must be replaced by a new one."""
        return False

    def unwritable(self, conn: Any, exc: BaseException) -> bool:
        """True when `exc` says the database cannot take writes now (a full or read-only disk,
        a server in read-only mode): the condition is the host's, not the request's, so callers
        may retry once it clears. A dialect may close `conn` so the next call gets a new one."""
        return False

    def damaged(self, exc: BaseException) -> bool:
        """True when `exc` says the database's files are corrupt (no retry will help)."""
        return False

    def limit_lock_wait(self, conn: Any, seconds: float) -> None:  # noqa: B027 (one writer: no waits)
        """Within the open transaction, give up waiting for a row lock after `seconds`."""

    def lock_timed_out(self, exc: BaseException) -> bool:
        """True when `exc` is a lock wait given up (`limit_lock_wait`)."""
        return False

    @abc.abstractmethod
    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        """Commit on success, roll back on any exception."""

    def sql(self, text: str) -> str:
        """The statement with this engine's placeholders."""
        return text

    def param(self, value: Any) -> Any:
        """A value as this engine stores it."""
        return value

    @abc.abstractmethod
    def ts(self, value: datetime) -> Any:
        """A time as stored."""

    @abc.abstractmethod
    def dt(self, value: Any) -> datetime:
        """A stored time as an aware UTC datetime."""

    def lock_month(self, db: Db, month: str) -> None:  # noqa: B027 - a single writer needs none
        """Serialise every change to `month`'s spend totals until commit."""

    def lock_schema(self, db: Db) -> None:  # noqa: B027 - a single writer needs none
        """Serialise schema creation between processes until commit."""

    def lock_history(self, db: Db) -> None:  # noqa: B027 - SQLite's INSERT holds the write lock
        """Serialise entries of the policy history until commit (one "same as the newest" test each)."""

    @abc.abstractmethod
    def columns(self, db: Db, table: str) -> set[str]:
        """Column names of `table`."""

    def execute(self, conn: Any, sql: str, params: Sequence[Any]) -> Any:
        return conn.execute(self.sql(sql), [self.param(p) for p in params])

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(self.sql(sql), [[self.param(p) for p in row] for row in rows])

    def insert_rows(self, conn: Any, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert many new rows at once (no conflict handling: the caller knows they are new)."""
        values = marks(columns.count(",") + 1)
        self.executemany(conn, f"INSERT INTO {table} ({columns}) VALUES ({values})", rows)


class Db:
    """A connection used under the store's lock: runs `?` statements through the dialect."""

    def __init__(self, dialect: Dialect, conn: Any) -> None:
        self.dialect = dialect
        self.conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = self.dialect.execute(self.conn, sql, params).fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in self.dialect.execute(self.conn, sql, params).fetchall()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.dialect.execute(self.conn, sql, params)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.dialect.executemany(self.conn, sql, rows)

    def insert_rows(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.dialect.insert_rows(self.conn, table, columns, rows)


def marks(n: int) -> str:
    """`?, ?, ...` for an IN list of n values."""
    return ", ".join("?" * n)


class SqliteDialect(Dialect):
    """One WAL file; a single writer at a time (BEGIN IMMEDIATE), so no row locks are needed."""

    name = "sqlite"
    types = {
        "key": "TEXT",
        "time": "REAL",
        "real": "REAL",
        "bool": "INTEGER",
        "bigint": "INTEGER",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "norowid": "WITHOUT ROWID",
    }

    def __init__(self, path: str, durability: str) -> None:
        self.path = path
        self.durability = durability

    def connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def unwritable(self, conn: Any, exc: BaseException) -> bool:
        name = getattr(exc, "sqlite_errorname", "") if isinstance(exc, sqlite3.OperationalError) else ""
        return name in ("SQLITE_FULL", "SQLITE_READONLY") or name.startswith("SQLITE_IOERR")

    def damaged(self, exc: BaseException) -> bool:
        name = getattr(exc, "sqlite_errorname", "") if isinstance(exc, sqlite3.DatabaseError) else ""
        return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")

    def ts(self, value: datetime) -> float:
        return value.timestamp()

    def dt(self, value: Any) -> datetime:
        return datetime.fromtimestamp(value, tz=UTC)

    def columns(self, db: Db, table: str) -> set[str]:
        return {r[1] for r in db.all(f"PRAGMA table_info({table})")}

    # SQLite stores every value as given: no copy of the parameters on the hot paths.
    def execute(self, conn: Any, sql: str, params: Sequence[Any]) -> Any:
        return conn.execute(sql, params)

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(sql, rows)


# Advisory lock keys (first int of the two-int form): schema creation, and one lock per month
# that serialises every change to that month's spend totals.
LOCK_SCHEMA = 0x5A42_0001
LOCK_SPEND = 0x5A42_0002


LOCK_WAIT_S = 5.0
"""How long a PostgreSQL statement waits for a lock another session holds, unless set."""

CONNECT_TIMEOUT_S = 10
"""How long a PostgreSQL connection may take when the DSN names no `connect_timeout`: a server
that accepts and never answers otherwise held a store call (or `szb policy replay`) 130 s."""


DEAD_PATH: dict[str, int] = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""TCP settings a DSN gets unless it sets its own: a database whose network path died (no reset, no
answer) held a store call, and with it a whole replica, for as long as the kernel's defaults (two
hours of keepalive silence, 15 minutes of retransmits); now about 30 s, then the store is unavailable."""


def connect_timeout(dsn: str) -> str:
    """`dsn` with a `connect_timeout` of `CONNECT_TIMEOUT_S` and `DEAD_PATH`'s settings, unless it
    sets its own."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(dsn)
    added: dict[str, str | int | None] = {k: v for k, v in DEAD_PATH.items() if k not in given}
    if "connect_timeout" not in given:
        added["connect_timeout"] = CONNECT_TIMEOUT_S
    return make_conninfo(dsn, **added) if added else dsn


def _server(dsn: str) -> str:
    """Where a DSN connects, for messages: host, port and database (never its password)."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(connect_timeout(dsn))
    host = given.get("host") or given.get("hostaddr") or "the local socket"
    return (f"{host} port {given.get('port') or 5432}, database {given.get('dbname') or '(default)'},"
            f" within {given.get('connect_timeout')} s")


class PostgresDialect(Dialect):
    """psycopg 3, imported lazily: the broker runs without it until a PostgresStore is built."""

    name = "postgresql"
    # Ids are compared and ordered byte-wise (COLLATE "C"), exactly like SQLite's BINARY
    # collation, so pagination tokens and "oldest first" do not depend on the database's locale.
    types = {
        "key": 'TEXT COLLATE "C"',
        "time": "TIMESTAMPTZ",
        "real": "DOUBLE PRECISION",
        "bool": "BOOLEAN",
        "bigint": "BIGINT",
        "serial": "BIGSERIAL PRIMARY KEY",
        "norowid": "",
    }
    row_lock = " FOR UPDATE"
    share_lock = " FOR SHARE"

    def __init__(self, dsn: str, *, lock_wait_s: float = LOCK_WAIT_S) -> None:
        from broker.store.base import StoreError

        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'shangzhuang-broker[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.dsn = dsn
        self.lock_wait_s = lock_wait_s

    def connect(self) -> Any:
        try:
            conn = self._psycopg.connect(connect_timeout(self.dsn), autocommit=True)
        except self._psycopg.OperationalError as exc:
            if "timeout expired" not in str(exc):
                raise  # (psycopg names the server in the others: refused, unresolved, auth)
            raise self._psycopg.OperationalError(f"{exc}: no answer from {_server(self.dsn)}") from exc
        # A session frozen mid-write (a paused or cut-off process) holds its rows for as long as
        # it lives: a call waiting on them fails after this, not the whole process with it.
        conn.execute(f"SET lock_timeout = {max(1, round(self.lock_wait_s * 1000))}")
        return conn

    def unwritable(self, conn: Any, exc: BaseException) -> bool:
        state = getattr(exc, "sqlstate", None) or ""
        if state == "25006":  # a read-only server (a standby, or read-only by setting)
            # A session keeps the read-only mode it began with, and a failover moves the
            # primary: the next call connects anew rather than asking this session again.
            conn.close()
            return True
        return state.startswith("53")  # insufficient resources: disk full, out of memory

    def broken(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def limit_lock_wait(self, conn: Any, seconds: float) -> None:
        conn.execute(f"SET LOCAL lock_timeout = {max(1, round(seconds * 1000))}")

    def lock_timed_out(self, exc: BaseException) -> bool:
        cause = exc.__cause__  # (as StoreUnavailable raised from it)
        return "55P03" in (getattr(exc, "sqlstate", None), getattr(cause, "sqlstate", None))

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        with conn.transaction():
            yield

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")

    def param(self, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL: store U+FFFD instead (log tails come from processes),
        # and a looked-up id or filter with a NUL (hostile input) matches nothing.
        return value.replace("\x00", "\ufffd") if isinstance(value, str) else value

    def ts(self, value: datetime) -> datetime:
        # Naive values are local time, as `datetime.timestamp()` reads them on SQLite.
        return datetime.fromtimestamp(value.timestamp(), tz=UTC)

    def dt(self, value: Any) -> datetime:
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    def lock_month(self, db: Db, month: str) -> None:
        db.run("SELECT pg_advisory_xact_lock(?, hashtext(?))", (LOCK_SPEND, month))

    def lock_schema(self, db: Db) -> None:
        db.run("SELECT pg_advisory_xact_lock(?, 0)", (LOCK_SCHEMA,))

    def lock_history(self, db: Db) -> None:
        db.run("SELECT pg_advisory_xact_lock(?, 1)", (LOCK_SCHEMA,))

    def columns(self, db: Db, table: str) -> set[str]:
        rows = db.all(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {r[0] for r in rows}

    def executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(self.sql(sql), [[self.param(p) for p in row] for row in rows])

    def insert_rows(self, conn: Any, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        # COPY: an order of magnitude faster than INSERTs for a big batch of submissions.
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([self.param(p) for p in row])
