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


def minutes(wait_s: float, unit: str = " min") -> str:
    """A wait for a person in whole minutes; `NEVER_S` is "∞" (shown as a number it read
    "16666667 min" for a drained partition); a wait under half a minute is "<1", not "0"."""
    if wait_s >= NEVER_S:
        return f"∞{unit}"
    return f"<1{unit}" if 0 < wait_s < 30 else f"{wait_s / 60:.0f}{unit}"


def start_text(wait_s: float, raised_from: float | None) -> str:
    """The projected on-prem start for a decision's reasons: the projection itself, and what the
    safety net counted it as when it raised it (never the raised figure as if it were the projection)."""
    if raised_from is None:
        return f"projected on-prem start in {minutes(wait_s)}"
    return (
        f"projected on-prem start in {minutes(raised_from)}, counted as {minutes(wait_s)} "
        f"(past its last responsible moment with nothing free now: no time left to burst if it slips)"
    )


OVERRUN_FLOOR_S = 60.0
"""A running job past its expected end is expected to run on at least this long."""


def expected_end(end_s: float, now_s: float) -> float:
    """When a running job expected to end at `end_s` is now expected to end. One past it runs on
    for as long as it has overrun, a minute at least (a job's remaining run grows with its age:
    Harchol-Balter & Downey, SIGMETRICS '96): taking it to end *now* projected the jobs behind it a
    wait of 0 s for as long as the overrun lasted, so none of them was ever late or burst."""
    return end_s if end_s > now_s else now_s + max(OVERRUN_FLOOR_S, now_s - end_s)


def queue_key(priority: str, due_s: float, arrival_s: float, job_id: str) -> tuple[int, float, float, str]:
    """The dispatcher's order within a tenant: priority, then deadline (arrival + max_wait), then age.

    A fair-share ordering wraps it (tenants take turns; each tenant's jobs go in this order).
    """
    return PRIORITY_RANK.get(priority, 1), due_s, arrival_s, job_id


# List scheduling, inlined (it runs for every job ahead of every projection). The running
# ends are read in order and the ends of the jobs placed meanwhile come from a heap: the
# soonest of the two is the same (end, units) a single heap of both would give. free + the
# units not yet freed always equal `total`, so a job that fits in `total` finds its units.
# A job started by a placed end replaces it in the heap (one heapreplace, not a pop and a
# push: the same values come out in the same order).
def projected_wait_s(
    free: int,
    ends: Sequence[tuple[float, int]],
    ahead: Iterable[tuple[int, float]],
    need: int,
    now_s: float,
    *,
    give_up_after_s: float = math.inf,
    total: int | None = None,
    ends_sorted: bool = False,
) -> float:
    """Seconds until a job needing `need` units starts (inf: never, the partition is too small).

    `free` units are free now; `ends` are (expected end, units) of running jobs; `ahead` are
    (units, expected runtime) of queued jobs that start first, in order. Stops early once the
    projection passes `give_up_after_s` (the answer is then only known to be later than that).
    A caller that keeps `ends` sorted and their units summed (`total`: free plus those units)
    may say so; the answer is the same.
    """
    if not ends_sorted:
        ends = sorted(ends)
    if total is None:
        total = free + sum(u for _, u in ends)
    placed: list[tuple[float, int]] = []
    i, n, t = 0, len(ends), now_s
    pop, push, swap = heapq.heappop, heapq.heappush, heapq.heapreplace
    for units, runtime in ahead:
        if units > total:
            continue  # it can never start here: it holds nothing up
        while free < units:
            if placed and (i == n or placed[0] < ends[i]):
                end, u = placed[0]
                if end > t:
                    t = end
                free += u
                if free >= units:  # it starts now: its end takes the freed end's place in the heap
                    if t - now_s > give_up_after_s:
                        return t - now_s
                    free -= units
                    swap(placed, (t + runtime, units))
                    break
                pop(placed)
            else:
                end, u = ends[i]
                i += 1
                if end > t:
                    t = end
                free += u
        else:
            if t - now_s > give_up_after_s:
                return t - now_s
            free -= units
            push(placed, (t + runtime, units))
    if need > total:
        return math.inf
    return _freed_at(need - free, placed, ends, i, t) - now_s


def _freed_at(
    short: int, placed: list[tuple[float, int]], ends: Sequence[tuple[float, int]], i: int, t: float
) -> float:
    """When `short` more units are free: the soonest placed or running (from `ends[i]`) ends, from `t`."""
    n = len(ends)
    while short > 0:
        if placed and (i == n or placed[0] < ends[i]):
            end, u = heapq.heappop(placed)
        else:
            end, u = ends[i]
            i += 1
        if end > t:
            t = end
        short -= u
    return t
