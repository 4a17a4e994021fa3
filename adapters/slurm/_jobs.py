"""slurmctld's job table, read once per short window and shared by the adapter's calls.

slurmrestd 22.05 (v0.0.38) cannot filter ``GET jobs``: every read returns every job slurmctld
still lists (finished ones stay for MinJobAge), ~4 KB each, and costs slurmrestd time that
grows with the table (~45 ms with 160 jobs on the test cluster). `JobTable` keeps the last
read for ``cache_s`` seconds so capacity(), status() and list_owned() of one dispatch pass
share it; the adapter's own submit/cancel `invalidate` it, so the next read sees the change.

``GET jobs?update_time=T`` is *not* an incremental read in 22.05: slurmctld compares T with
the time its job table last changed and answers either HTTP 304 (no body) or the whole
table. `JobTable` uses it as a conditional read: when the window has passed it asks "changed
since my last read?" and keeps the table on 304, which costs a few ms instead of a full
read. T is the local clock at the previous read minus ``clock_margin_s`` (slurmctld's clock
decides), and an unconditional read is made at least every ``full_read_s`` seconds, after
the adapter's own changes, and whenever a caller asks for one, in case the clocks disagree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.slurm._client import SlurmRest

Job = Mapping[str, Any]


@dataclass(frozen=True)
class JobsRead:
    """One read of the job table: the jobs by id and when (and as of which change) it was taken."""

    jobs: Mapping[str, Job]
    read_at: float  # monotonic, start of the read that last confirmed it
    wall: float  # time.time() at that start: the next conditional read asks "changed since?"
    full_at: float  # monotonic, start of the last unconditional read
    generation: int  # `JobTable.invalidate` count when the read started


@dataclass
class JobTableStats:
    full_reads: int = 0
    unchanged_reads: int = 0  # conditional reads slurmrestd answered with 304
    cache_hits: int = 0


class JobTable:
    """The shared, briefly cached ``GET jobs`` of one slurmrestd (thread-safe, one read at a time)."""

    def __init__(
        self,
        rest: SlurmRest,
        *,
        cache_s: float = 1.0,
        full_read_s: float = 30.0,
        clock_margin_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rest = rest
        self.cache_s = cache_s
        self.full_read_s = full_read_s
        self.clock_margin_s = clock_margin_s
        self._monotonic = monotonic
        self._wall = wall
        self._read_lock = threading.Lock()  # one read in flight; waiters reuse its result
        self._last: JobsRead | None = None
        self._generation = 0
        self.stats = JobTableStats()

    def invalidate(self) -> None:
        """The table changed (our own submit/cancel): the next read goes to slurmrestd in full."""
        self._generation += 1

    def fresh(self, max_age_s: float | None = None) -> Mapping[str, Job] | None:
        """The cached jobs when read within ``max_age_s`` (default `cache_s`) and still valid."""
        last = self._last
        limit = self.cache_s if max_age_s is None else max_age_s
        if last is None or last.generation != self._generation:
            return None
        if self._monotonic() - last.read_at >= limit:
            return None
        return last.jobs

    def read(self, max_age_s: float | None = None, *, full: bool = False) -> Mapping[str, Job]:
        """The job table, from the cache when fresh enough, else read (conditionally if allowed).

        ``full``: skip the cache and the conditional read (a lookup that must not miss a job).
        """
        if not full:
            jobs = self.fresh(max_age_s)
            if jobs is not None:
                self.stats.cache_hits += 1
                return jobs
        started = self._monotonic()
        with self._read_lock:
            last = self._last
            if last is not None and last.read_at >= started and last.generation == self._generation:
                return last.jobs  # another thread read while this one waited
            return self._read(full).jobs

    def _read(self, full: bool) -> JobsRead:
        generation = self._generation  # before the request: a change during it invalidates it
        mono, wall = self._monotonic(), self._wall()
        last = self._last
        if (not full and last is not None and last.generation == generation
                and mono - last.full_at < self.full_read_s):
            since = int(last.wall - self.clock_margin_s)
            reply = self.rest.get_if_changed(f"jobs?update_time={since}")
            if reply is None:
                self.stats.unchanged_reads += 1
                self._last = JobsRead(last.jobs, mono, wall, last.full_at, generation)
                return self._last
        else:
            reply = self.rest.request("GET", "jobs")
        self.stats.full_reads += 1
        jobs = {str(j.get("job_id")): j for j in reply.get("jobs") or [] if isinstance(j, Mapping)}
        self._last = JobsRead(jobs, mono, wall, mono, generation)
        return self._last
