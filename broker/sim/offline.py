"""An offline reference schedule: feasible, clairvoyant, every job on time where any option is.

The LP bound (`broker.sim.lower_bound`) relaxes capacity into fluid, preemptible work, so
at the peaks no real schedule reaches it. This is the other yardstick: a schedule that
knows the whole trace but obeys the real constraints — each job runs unpreempted on one
on-prem partition within [arrival, arrival + max_wait] with the partition's accelerators
never over-committed, or in the cloud at its cheapest expected cost (spot priced with its
expected restarts, as the bound and the baselines price it; no provisioning delay).

Greedy: jobs claim on-prem capacity in order of what on-prem saves them (cloud cost −
on-prem cost, largest first), each at the earliest on-time start in its cheapest partition
that has room; the rest go to the cloud. (On the bundled trace, ordering by the saving
itself beats the saving per accelerator-hour by a quarter, and arrival order by 3x: the
jobs that are dear in the cloud are the ones to keep at home.) Jobs no cloud can run take the
earliest start on-prem even if late (counted in `late_jobs`). Time is kept in buckets of
`bucket_s` seconds and a job holds every bucket it touches, so the schedule stays feasible.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from broker.sim.jobs import JobFacts, SimJob

MAX_CANDIDATES = 64
"""Start times tried per job and partition (arrival, then the ends of jobs placed there)."""


@dataclass(frozen=True)
class OfflineSchedule:
    cost: float
    onprem_jobs: int
    cloud_jobs: int
    late_jobs: int
    """Jobs no cloud can run that could not start on time on-prem either."""
    unplaced: int
    """Jobs with no allowed offer at all (rejected in every strategy too)."""
    method: str = "greedy"
    """How the schedule was made: `greedy`, or `greedy+milp` when the MILP improved it."""
    placements: dict[int, tuple[str, float]] = field(default_factory=dict, repr=False, compare=False)
    """Job index -> (partition key, start second) of every job placed on-prem."""


class _Partition:
    """Accelerators in use per time bucket, and the sorted end times of what was placed."""

    def __init__(self, total: int, buckets: int, bucket_s: float) -> None:
        self.total = total
        self.bucket_s = bucket_s
        self.used = np.zeros(buckets, dtype=np.int32)
        self.ends: list[float] = []

    def _span(self, start: float, runtime: float) -> tuple[int, int]:
        b0 = int(start // self.bucket_s)
        b1 = max(b0 + 1, math.ceil((start + runtime) / self.bucket_s))
        return b0, b1

    def fits(self, start: float, runtime: float, demand: int) -> bool:
        b0, b1 = self._span(start, runtime)
        if b1 > len(self.used):
            self.used = np.concatenate([self.used, np.zeros(b1 - len(self.used) + 1024, dtype=np.int32)])
        return int(self.used[b0:b1].max()) + demand <= self.total

    def take(self, start: float, runtime: float, demand: int) -> None:
        b0, b1 = self._span(start, runtime)
        self.used[b0:b1] += demand
        bisect.insort(self.ends, b1 * self.bucket_s)

    def earliest(self, arrival: float, latest: float, runtime: float, demand: int) -> float | None:
        """The earliest start in [arrival, latest] with room for the whole run (None: none)."""
        if demand > self.total:
            return None
        if self.fits(arrival, runtime, demand):
            return arrival
        # Then the ends after arrival up to `latest`, in order (at most MAX_CANDIDATES of them
        # when `latest` is bounded); the first that fits.
        ends = self.ends
        i = bisect.bisect_right(ends, arrival)
        bounded = not math.isinf(latest)
        stop = min(bisect.bisect_right(ends, latest, i), i + MAX_CANDIDATES) if bounded else len(ends)
        for at in range(i, stop, MAX_CANDIDATES):
            found = self.first_fit(ends[at : min(stop, at + MAX_CANDIDATES)], runtime, demand)
            if found is not None:
                return found
        return None if bounded or not ends else max(arrival, ends[-1])

    def first_fit(self, starts: list[float], runtime: float, demand: int) -> float | None:
        """The first of `starts` that `fits`: every start's busiest bucket in one numpy call."""
        spans = [self._span(t, runtime) for t in starts]
        if not spans:
            return None
        top = max(b1 for _, b1 in spans)
        if top >= len(self.used):  # (the pairs below read one bucket past each span)
            self.used = np.concatenate([self.used, np.zeros(top - len(self.used) + 1024, dtype=np.int32)])
        # reduceat over [b0, b1, b0', b1', ...]: the even results are the max over each [b0, b1).
        peaks = np.maximum.reduceat(self.used, np.array(spans, dtype=np.int64).ravel())[::2]
        room = np.flatnonzero(peaks <= self.total - demand)
        return starts[int(room[0])] if len(room) else None


def offline_schedule(
    jobs: Sequence[SimJob],
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    *,
    bucket_s: float = 60.0,
) -> OfflineSchedule:
    """The greedy clairvoyant schedule of the module docstring."""
    horizon = max((j.arrival_s + j.max_wait_s + j.runtime_s for j in jobs), default=0.0)
    buckets = int(horizon // bucket_s) + 2
    parts = {k: _Partition(n, buckets, bucket_s) for k, n in capacity.items() if n > 0}

    def saving(i: int) -> float:
        f = facts[i]
        options = [c for k, c in f.onprem.items() if k in parts]
        if not options:
            return -math.inf
        if f.cloud_cost is None:
            return math.inf  # must run on-prem: place these first
        return f.cloud_cost - min(options)

    order = sorted(range(len(jobs)), key=lambda i: (-saving(i), jobs[i].arrival_s, i))
    cost = 0.0
    onprem = cloud = late = unplaced = 0
    placements: dict[int, tuple[str, float]] = {}
    for i in order:
        j, f = jobs[i], facts[i]
        choices = sorted((c, k) for k, c in f.onprem.items() if k in parts)
        cloud_cost = f.cloud_cost
        placed = False
        for c, k in choices:
            if cloud_cost is not None and c >= cloud_cost:
                break  # the cloud is no dearer than waiting for this (or any later) partition
            start = parts[k].earliest(j.arrival_s, j.arrival_s + j.max_wait_s, j.runtime_s, j.demand)
            if start is not None:
                parts[k].take(start, j.runtime_s, j.demand)
                placements[i] = (k, start)
                cost += c
                onprem += 1
                placed = True
                break
        if placed:
            continue
        if cloud_cost is not None:
            cost += cloud_cost
            cloud += 1
            continue
        start = (
            parts[choices[0][1]].earliest(j.arrival_s, math.inf, j.runtime_s, j.demand) if choices else None
        )
        if start is None:
            unplaced += 1
            continue
        c, k = choices[0]  # no cloud can run it: the earliest start on-prem, even if late
        parts[k].take(start, j.runtime_s, j.demand)
        placements[i] = (k, start)
        cost, onprem, late = cost + c, onprem + 1, late + 1
    return OfflineSchedule(cost, onprem, cloud, late, unplaced, placements=placements)
