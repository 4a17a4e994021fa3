"""Cloud instances' output kept in PostgreSQL, so every API replica serves `szb logs`.

An agent may post one chunk to one replica and the next to another (a load balancer, a
replica restarting): the chunks go to one table, appended under a per-attempt lock with the
same rules as the single-process file (a chunk already kept is acknowledged again, one beyond
the end is refused by answering the end). Backends that serve output themselves (local,
Slurm) are only read by the scheduler's adapters, which an API replica does not have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from adapters.base import Adapter
from broker.joblogs import CHUNK_BYTES, MAX_AGENT_LOG_BYTES, JobLogs, OutputElsewhereError
from broker.model import Attempt, SiteId
from broker.store import JobStore, StoreUnavailable
from broker.store._dialect import connect_timeout
from broker.store._sql_core import UNREACHABLE

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_log_chunks (
  attempt_id TEXT COLLATE "C" NOT NULL, off BIGINT NOT NULL, data BYTEA NOT NULL,
  PRIMARY KEY (attempt_id, off)
)
"""


class SharedJobLogs(JobLogs):
    """`JobLogs` whose agent-sent output lives in the shared database, not a replica's disk."""

    def __init__(
        self,
        store: JobStore,
        adapters: Mapping[SiteId, Adapter],
        folder: Path,
        dsn: str,
        agent_posted: Callable[[str], bool] = lambda site: True,
    ) -> None:
        super().__init__(store, adapters, folder, agent_posted)
        self._dsn = connect_timeout(dsn)
        self._db_lock = threading.Lock()
        self._conn: Any = None
        self._on_conn(self._create)

    @staticmethod
    def _create(conn: Any) -> None:
        with conn.transaction():  # replicas starting together: one creates, the others see it
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('agent_log_chunks'))")
            conn.execute(SCHEMA)

    def _on_conn(self, work: Callable[[Any], T]) -> T:
        """`work` on this replica's connection, under its lock. A connection the server dropped
        (a restart, a proxy) is replaced, once more if it is found dead only by using it; a
        database that cannot be reached is StoreUnavailable (the agent sends the chunk again)."""
        import psycopg

        with self._db_lock:
            try:
                return work(self._connected())
            except psycopg.OperationalError as exc:
                if self._conn is None or not (self._conn.closed or self._conn.broken):
                    raise StoreUnavailable(f"the database cannot be reached: {exc}", UNREACHABLE) from exc
            try:  # it died while idle: once more, on a new one
                return work(self._connected())
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"the database cannot be reached: {exc}", UNREACHABLE) from exc

    def _connected(self) -> Any:
        """This replica's connection, made anew when there is none or the server dropped it."""
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._dsn, autocommit=True)
        return self._conn

    @staticmethod
    def _stored_size(conn: Any, attempt_id: str) -> int:
        row = conn.execute(
            "SELECT COALESCE(max(off + length(data)), 0) FROM agent_log_chunks WHERE attempt_id = %s",
            (attempt_id,),
        ).fetchone()
        return int(row[0]) if row else 0

    def _keep(self, attempt: Attempt, offset: int, data: bytes) -> int:
        def keep(conn: Any) -> int:
            with conn.transaction():
                # One writer per attempt across replicas: the size read and the insert agree.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (attempt.id,))
                size = self._stored_size(conn, attempt.id)
                if offset > size or offset + len(data) <= size:
                    return size  # a gap to resend from, or a chunk kept already
                if size >= MAX_AGENT_LOG_BYTES:
                    return offset + len(data)
                fresh = data[size - offset : MAX_AGENT_LOG_BYTES - offset]
                conn.execute(
                    "INSERT INTO agent_log_chunks (attempt_id, off, data) VALUES (%s, %s, %s)",
                    (attempt.id, size, fresh),
                )
                return offset + len(data)

        return self._on_conn(keep)

    def read(self, attempt: Attempt, offset: int, limit: int = CHUNK_BYTES) -> bytes:
        if attempt.site in self.adapters:
            return super().read(attempt, offset, limit)
        if not self.agent_posted(attempt.site):
            raise OutputElsewhereError(attempt)  # an empty answer would read as "no output"
        rows: list[Any] = self._on_conn(
            lambda conn: conn.execute(
                "SELECT off, data FROM agent_log_chunks WHERE attempt_id = %s AND off + length(data) > %s"
                " AND off < %s ORDER BY off",
                (attempt.id, offset, offset + limit),
            ).fetchall()
        )
        out = bytearray()
        for off, chunk in rows:
            out += bytes(chunk)[max(0, offset + len(out) - off) :]
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
