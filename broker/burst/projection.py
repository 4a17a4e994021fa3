"""Projected start of a queued job on one on-prem partition. Pure.

The partition's running jobs free their accelerators at their expected ends; the jobs
queued ahead (in the order the dispatcher really starts them: priority, then deadline,
within fair share) start in that order as soon as enough accelerators are free; the job
starts after them. Jobs ahead that will burst are left out by the caller. This is list
scheduling without backfill, so it errs late when small jobs slip past big ones.

The expected end of a running job is its start plus its runtime estimate corrected by the
tenant's learned ratio of actual to estimated runtime (`broker.burst.runtimes`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}

NEVER_S = 1e9
"""A projected wait standing for "never" (finite, so it can be rounded, compared and sent)."""


def queue_key(priority: str, due_s: float, arrival_s: float, job_id: str) -> tuple[int, float, float, str]:
    """The dispatcher's order within a tenant: priority, then deadline (arrival + max_wait), then age.

    A fair-share ordering wraps it (tenants take turns; each tenant's jobs go in this order).
    """
    return PRIORITY_RANK.get(priority, 1), due_s, arrival_s, job_id


def projected_wait_s(
    free: int,
    ends: Sequence[tuple[float, int]],
    ahead: Iterable[tuple[int, float]],
    need: int,
    now_s: float,
    *,
    give_up_after_s: float = math.inf,
) -> float:
    """Seconds until a job needing `need` units starts (inf: never, the partition is too small).

    `free` units are free now; `ends` are (expected end, units) of running jobs; `ahead` are
    (units, expected runtime) of queued jobs that start first, in order. Stops early once the
    projection passes `give_up_after_s` (the answer is then only known to be later than that).
    """
    heap = list(ends)
    heapq.heapify(heap)
    total = free + sum(u for _, u in heap)
    t = now_s

    def start(units: int) -> bool:
        nonlocal free, t
        if units > total:
            return False
        while free < units:
            if not heap:
                return False
            end, u = heapq.heappop(heap)
            t = max(t, end)
            free += u
        return True

    for units, runtime in ahead:
        if not start(units):
            continue  # it can never start here: it holds nothing up
        if t - now_s > give_up_after_s:
            return t - now_s
        free -= units
        heapq.heappush(heap, (t + runtime, units))
    if not start(need):
        return math.inf
    return t - now_s
