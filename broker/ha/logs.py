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
from typing import Any

from adapters.base import Adapter
from broker.joblogs import CHUNK_BYTES, MAX_AGENT_LOG_BYTES, JobLogs, OutputElsewhereError
from broker.model import Attempt, SiteId
from broker.store import JobStore
from broker.store._dialect import connect_timeout

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
        import psycopg

        self._conn = psycopg.connect(connect_timeout(dsn), autocommit=True)
        self._conn.execute(SCHEMA)
        self._db_lock = threading.Lock()

    def _size(self, attempt_id: str) -> int:
        row = self._conn.execute(
            "SELECT COALESCE(max(off + length(data)), 0) FROM agent_log_chunks WHERE attempt_id = %s",
            (attempt_id,),
        ).fetchone()
        return int(row[0]) if row else 0

    def _keep(self, attempt: Attempt, offset: int, data: bytes) -> int:
        with self._db_lock, self._conn.transaction():
            # One writer per attempt across replicas: the size read and the insert agree.
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (attempt.id,))
            size = self._size(attempt.id)
            if offset > size or offset + len(data) <= size:
                return size  # a gap to resend from, or a chunk kept already
            if size >= MAX_AGENT_LOG_BYTES:
                return offset + len(data)
            fresh = data[size - offset : MAX_AGENT_LOG_BYTES - offset]
            self._conn.execute(
                "INSERT INTO agent_log_chunks (attempt_id, off, data) VALUES (%s, %s, %s)",
                (attempt.id, size, fresh),
            )
            return offset + len(data)

    def read(self, attempt: Attempt, offset: int, limit: int = CHUNK_BYTES) -> bytes:
        if attempt.site in self.adapters:
            return super().read(attempt, offset, limit)
        if not self.agent_posted(attempt.site):
            raise OutputElsewhereError(attempt)  # an empty answer would read as "no output"
        with self._db_lock:
            rows: list[Any] = self._conn.execute(
                "SELECT off, data FROM agent_log_chunks WHERE attempt_id = %s AND off + length(data) > %s"
                " AND off < %s ORDER BY off",
                (attempt.id, offset, offset + limit),
            ).fetchall()
        out = bytearray()
        for off, chunk in rows:
            out += bytes(chunk)[max(0, offset + len(out) - off) :]
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    def close(self) -> None:
        self._conn.close()
