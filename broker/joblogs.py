"""A job's output for `szb logs`: read from its backend, or kept from what its cloud agent sent.

Backends that can read output themselves (`adapters.base.LogSource`: the local executor,
Slurm) are asked directly. Cloud instances post their output in chunks to the agent
endpoint; the broker appends them, in order, to one file per attempt under its data dir.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from adapters.base import Adapter, AdapterError, LogSource, read_file_chunk
from broker.errors import BrokerError
from broker.model import Attempt, Job, SiteId
from broker.store import JobStore, StoreUnavailable

CHUNK_BYTES = 64 * 1024
MAX_AGENT_LOG_BYTES = 64 * 1024 * 1024
"""Output kept per cloud attempt; later chunks are acknowledged and dropped."""
FOLLOW_POLL_S = 0.5
UNWRITABLE_LOG_EVERY_S = 60.0

log = logging.getLogger(__name__)


class OutputElsewhereError(BrokerError):
    """The attempt's output is read from its backend, which this process does not talk to."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(
            f"job {attempt.job_id} ran at {attempt.site}, whose output is read from that backend, and"
            " only the active scheduler reads it; this API replica cannot stream it"
            f" (its last lines: szb get {attempt.job_id})"
        )


class OutputRemovedError(BrokerError):
    """The attempt's output was removed by its site's retention (`keep_finished_attempts`)."""

    def __init__(self, attempt: Attempt, why: str) -> None:
        super().__init__(f"job {attempt.job_id}: {why} (its last lines: szb get {attempt.job_id})")


@dataclass(frozen=True)
class LogPiece:
    attempt_id: str
    offset: int
    data: bytes


class JobLogs:
    """Where each attempt's output is, and how to read it from a byte offset."""

    def __init__(
        self,
        store: JobStore,
        adapters: Mapping[SiteId, Adapter],
        folder: Path,
        agent_posted: Callable[[str], bool] = lambda site: True,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.folder = folder
        self.agent_posted = agent_posted
        """Whether a site's jobs post their output through the agent (cloud instances)."""
        self._lock = threading.Lock()
        self._unwritable_logged = float("-inf")

    def _agent_file(self, attempt_id: str) -> Path:
        return self.folder / f"{attempt_id}.log"

    def append(self, attempt: Attempt, offset: int, data: bytes) -> int:
        """Keep a chunk the agent sent at `offset`; returns the offset it should send next.

        Chunks are idempotent: one already kept is acknowledged again, one beyond the end (a
        lost chunk before it) is refused by answering the current end, which the agent resends from.
        A local or Slurm job's output is read from its backend: chunks its agent secret posts are
        acknowledged and dropped, or any running job could write 64 MiB into the data dir.
        """
        if not self.agent_posted(attempt.site):
            return offset + len(data)
        return self._keep(attempt, offset, data)

    def _keep(self, attempt: Attempt, offset: int, data: bytes) -> int:
        path = self._agent_file(attempt.id)
        with self._lock:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                size = path.stat().st_size if path.exists() else 0
                if offset > size or offset + len(data) <= size:
                    return size  # a gap to resend from, or a chunk kept already
                if size >= MAX_AGENT_LOG_BYTES:
                    return offset + len(data)
                with open(path, "r+b" if path.exists() else "wb") as f:
                    f.seek(offset)
                    f.write(data[: MAX_AGENT_LOG_BYTES - offset])
            except OSError as exc:  # a full data dir: the agent retries, then reports its result
                self._unwritable(exc)
            return offset + len(data)

    def _unwritable(self, exc: OSError) -> NoReturn:
        """The data dir cannot take cloud output now: one warning a minute (not a traceback per
        chunk, as before), and the agent is told to retry later (503, UNAVAILABLE)."""
        now = time.monotonic()
        if now - self._unwritable_logged >= UNWRITABLE_LOG_EVERY_S:
            self._unwritable_logged = now
            log.warning("cannot keep cloud jobs' output in %s (%s): their agents send it again, then "
                        "report their results without it", self.folder, exc.strerror or exc)
        raise StoreUnavailable(str(exc), "the broker cannot keep job output now; retry later") from exc

    def read(self, attempt: Attempt, offset: int, limit: int = CHUNK_BYTES) -> bytes:
        """Up to `limit` bytes of the attempt's output from `offset` (blocking I/O: use a thread)."""
        adapter = self.adapters.get(attempt.site)
        if isinstance(adapter, LogSource) and attempt.backend_id is not None:
            try:
                return adapter.read_log(attempt.backend_id, attempt.token, offset, limit)
            except AdapterError as exc:
                if exc.code == "OutputRemoved":  # said, not an empty answer that reads as "no output"
                    raise OutputRemovedError(attempt, exc.message) from exc
                return b""
        return read_file_chunk(self._agent_file(attempt.id), offset, limit) or b""

    async def stream(self, job: Job, *, follow: bool, tail_bytes: int) -> AsyncIterator[LogPiece]:
        """The output of the job's latest attempt; with `follow`, until the job is terminal.

        When the job moves to a new attempt (failover, requeue), the stream goes on with it.
        """
        attempt_id, offset = "", 0
        while True:
            attempts = await asyncio.to_thread(self.store.attempts_for, job.id)
            latest = attempts[-1] if attempts else None
            if latest is not None and latest.id != attempt_id:
                attempt_id, offset = latest.id, 0
                if tail_bytes > 0:
                    offset = await self._tail_start(latest, tail_bytes)
            got_any = False
            while latest is not None:
                data = await asyncio.to_thread(self.read, latest, offset)
                if not data:
                    break
                got_any = True
                yield LogPiece(latest.id, offset, data)
                offset += len(data)
            if not follow:
                return
            current = await asyncio.to_thread(self.store.get, job.id)
            if current.state.terminal and not got_any:
                # One more read after the end: output written just before the job ended.
                if latest is not None:
                    data = await asyncio.to_thread(self.read, latest, offset)
                    if data:
                        yield LogPiece(latest.id, offset, data)
                return
            await asyncio.sleep(FOLLOW_POLL_S)

    async def _tail_start(self, attempt: Attempt, tail_bytes: int) -> int:
        """The offset `tail_bytes` before the current end of the attempt's output."""
        end = 0
        while True:
            data = await asyncio.to_thread(self.read, attempt, end, 1 << 20)
            if not data:
                return max(0, end - tail_bytes)
            end += len(data)
