"""A partition's waiting line for the live projected wait, and the bursts lined up on each route.

`Line` list-schedules a partition's line incrementally (`broker.dispatch.waits` keeps one per
partition view): each waiter is placed once, and each start is `projected_wait_s` over the
soonest running ends, so a projection costs the same however deep the queue. `CommittedBursts`
keeps, per cloud site, the deadlines of jobs waiting to burst there at their last responsible
moment (`BurstInputs.launches_ahead`). Pure.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from broker.burst.projection import projected_wait_s
from broker.model import SiteId

SOONEST = 10
"""Running ends a projection note lists (the soonest)."""

Ahead = tuple[int, float]
"""(units, expected runtime seconds) of a job that starts before the one projected."""


@dataclass
class PartitionView:
    """One on-prem partition as a snapshot saw it, plus this snapshot's own starts."""

    accelerated: bool
    free: int
    ends: list[tuple[float, int]] = field(default_factory=list)
    """(expected end, units) of running and launching jobs (as epoch seconds)."""
    backend_queue: list[Ahead] = field(default_factory=list)
    """Jobs pending in the backend's own queue (Slurm), the broker's and other users', in its
    order: ahead of every broker waiter."""
    backend_jobs: list[str] = field(default_factory=list)
    """The broker job ids of `backend_queue`, in the same order ("": another user's job)."""
    foreign: int = 0
    """Units busy with work the broker did not start (their ends: the backend's own estimate)."""
    line: Line | None = None
    """The line so far, list-scheduled (rebuilt when the view or the line is redrawn)."""
    _soonest: list[tuple[float, int]] | None = field(default=None, init=False, repr=False)

    _noted: tuple[float, int, tuple[tuple[int, float], ...]] | None = field(
        default=None, init=False, repr=False
    )

    def soonest(self) -> list[tuple[float, int]]:
        """The (at most) SOONEST earliest `ends`, kept once per view (explain reads it per decision)."""
        if self._soonest is None:
            self._soonest = heapq.nsmallest(SOONEST, self.ends)
        return self._soonest

    def soonest_in(self, now_s: float) -> tuple[tuple[int, float], ...]:
        """(units, whole seconds from `now_s` to its end) of the soonest ends (the explain note)."""
        hit = self._noted
        if hit is None or hit[0] != now_s or hit[1] != len(self.ends):
            running = tuple((u, round(max(0.0, e - now_s))) for e, u in self.soonest())
            hit = self._noted = (now_s, len(self.ends), running)
        return hit[2]

    def started(self, end_s: float, units: int) -> None:
        """A job this snapshot starts: its units are busy until `end_s` (the line is redrawn)."""
        self.ends.append((end_s, units))
        self.line = None
        if self._soonest is not None:
            bisect.insort(self._soonest, (end_s, units))
            del self._soonest[SOONEST:]


@dataclass
class Line:
    """A partition's line list-scheduled up to its last job: where the next job starts from.

    Each job of the line is placed once, so projecting the next job costs one pass over the
    running ends however deep the queue (the same schedule as `projected_wait_s` over the
    whole line, which it calls for each start)."""

    free: int
    heap: list[tuple[float, int]]
    t: float
    total: int
    generation: int
    applied: int = 0
    """Broker waiters of the line placed so far."""
    sent: int = 0
    """Jobs pending in the backend's queue placed so far (they go before every broker waiter)."""

    @classmethod
    def of(cls, view: PartitionView, now_s: float, generation: int, upto: int | None = None) -> Line:
        """The view's running ends, then the jobs pending at the backend (the first `upto` of
        them: those before a job pending there itself), placed from `now_s`."""
        heap = list(view.ends)
        heapq.heapify(heap)
        line = cls(view.free, heap, now_s, view.free + sum(u for _, u in heap), generation)
        pending = view.backend_queue[:upto]
        for units, runtime in pending:
            line.add(units, runtime)
        line.sent = len(pending)
        return line

    def start(self, need: int) -> float:
        """When a job needing `need` units would start after the line (inf: never here)."""
        if need > self.total:
            return math.inf
        if self.free >= need:
            return self.t
        # The soonest `need - free` ends always free enough (each holds a unit or more): the
        # projection needs only those, not a copy of every running job.
        soonest = heapq.nsmallest(need - self.free, self.heap)
        return self.t + projected_wait_s(self.free, soonest, (), need, self.t)

    def add(self, units: int, runtime_s: float) -> None:
        """Place the next job of the line where it starts, holding its units for `runtime_s`."""
        at = self.start(units)
        if math.isinf(at):
            return  # it can never start here: it holds nothing up
        while self.heap and self.heap[0][0] <= at:  # ends passed by then free their units
            self.free += heapq.heappop(self.heap)[1]
        self.free -= units
        heapq.heappush(self.heap, (at + runtime_s, units))
        self.t = at


class CommittedBursts:
    """Per cloud site, the deadlines of the jobs committed to burst there (WAIT with `burst_in_s`)."""

    def __init__(self) -> None:
        self.due: dict[str, list[tuple[float, str]]] = {}
        self.where: dict[str, tuple[str, float]] = {}

    def put(self, job_id: str, site: str | None, due_s: float) -> None:
        """The job's latest decision: committed to burst to `site` by `due_s` (None: not)."""
        old = self.where.pop(job_id, None)
        if old is not None:
            line = self.due[old[0]]
            del line[bisect.bisect_left(line, (old[1], job_id))]
        if site is not None:
            bisect.insort(self.due.setdefault(site, []), (due_s, job_id))
            self.where[job_id] = (site, due_s)

    def ahead(self, due_s: float, job_id: str | None = None) -> Mapping[SiteId, int]:
        """Per site, the committed bursts due before job `job_id`, due at `due_s`: those due sooner,
        and those due at the same moment and listed before it (a batch submitted together is due
        together, and the route's launch rounds must stagger it too); None: a job not yet
        committed, behind all of them."""
        out: dict[SiteId, int] = {}
        for site, line in self.due.items():
            if job_id is None:
                n = bisect.bisect_right(line, due_s, key=itemgetter(0))
            else:
                n = bisect.bisect_left(line, (due_s, job_id))
            if n:
                out[SiteId(site)] = n
        return out


def line_up(
    view: PartitionView, queued: Sequence[tuple[int, float, str]], mine: dict[str, tuple[Ahead, str]]
) -> None:
    """The view's backend queue in the backend's order: `queued` as read (units, time limit,
    backend id of this broker's job or "" for another user's), each of `mine` (backend id ->
    (its entry, its job id)) at its place there, the rest of `mine` (pending since) last.
    Another user's pending work starts before a new job as the broker's own does; leaving it
    out projected a short wait on a partition Slurm had promised to a long job for hours."""
    for units, limit_s, backend_id in queued:
        hit = mine.pop(backend_id, None) if backend_id else ((units, limit_s), "")
        if hit is not None:  # (a job of ours the broker no longer counts as pending: not here)
            view.backend_queue.append(hit[0])
            view.backend_jobs.append(hit[1])
    for entry, job_id in mine.values():
        view.backend_queue.append(entry)
        view.backend_jobs.append(job_id)


def foreign_ends(
    units: int, releases: Sequence[tuple[float, int]], now_s: float, backend_wait_s: float
) -> list[tuple[float, int]]:
    """(end, units) of `units` busy with work the broker did not start: each of its jobs frees
    its units at its own end (soonest first); units no reported job explains (a job that just
    started, a node's slack) at the backend's own expected wait, as before any were reported.
    Lumping them all at the soonest end projected a job needing them all to start far too soon."""
    out: list[tuple[float, int]] = []
    for remaining_s, u in releases:
        if units <= 0:
            break
        take = min(u, units)
        out.append((now_s + remaining_s, take))
        units -= take
    if units > 0:
        out.append((now_s + backend_wait_s, units))
    return out


def keep_last(memo: dict[int, Any], key: int, value: Any, size: int = 8) -> None:
    """Remember `value` under `key`, forgetting the oldest entries beyond `size` (a pass in
    progress keeps its snapshot's entry while explain reads fresh snapshots)."""
    memo.pop(key, None)
    memo[key] = value
    while len(memo) > size:
        del memo[next(iter(memo))]
