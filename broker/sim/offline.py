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
earliest start on-prem even if late (counted in `late_jobs`). Given a `Purse`, a burst must fit
what is left of its tenant's budget for the month and of the global cap (cash after vouchers):
a job they cannot pay waits for on-prem capacity, or for a later month's budget (late). Time is
kept in buckets of `bucket_s` seconds and a job holds every bucket it touches, so the schedule
stays feasible.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from broker.sim.budgets import Purse
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob

NEAR_LP_PER_S = 1e-6
"""What the priced greedy charges per second between a start and the LP's own start for the job."""

MAX_CANDIDATES = 64
"""Start times tried per job and partition (arrival, then the ends of jobs placed there)."""


@dataclass(frozen=True)
class OfflineSchedule:
    cost: float
    onprem_jobs: int
    cloud_jobs: int
    late_jobs: int
    """Jobs that could not start on time on-prem, with no cloud that runs them or no budget that
    pays the burst then (these burst in a later month's budget)."""
    unplaced: int
    """Jobs with no allowed offer at all (rejected in every strategy too)."""
    method: str = "greedy"
    """How the schedule was made: `greedy`, or `greedy+milp` when the MILP improved it."""
    milp_cut_short: int = 0
    """MILP windows the time budget or the size limit cut short (they keep the greedy's choices,
    or the best the MILP found in time)."""
    placements: dict[int, tuple[str, float]] = field(default_factory=dict, repr=False, compare=False)
    """Job index -> (partition key, start second) of every job placed on-prem."""
    burst_late: frozenset[int] = field(default_factory=frozenset, repr=False, compare=False)
    """The jobs burst in a later budget month (late), by index."""


def late_count(
    jobs: Sequence[SimJob], placements: Mapping[int, tuple[str, float]], burst_late: Iterable[int]
) -> int:
    """Jobs a schedule starts late: on-prem after arrival + max_wait, or burst in a later month (and
    not placed on-prem since)."""
    due = {i: jobs[i].arrival_s + jobs[i].max_wait_s + 1e-6 for i in placements}
    return sum(1 for i, (_, start) in placements.items() if start > due[i]) + sum(
        1 for i in burst_late if i not in placements
    )


def holds(capacity: Mapping[str, int], k: str, demand: int) -> bool:
    """Partition `k` is simulated and can hold the job at all: placement checks the policy's nodes,
    but a scaled-down partition may be smaller than a gang, which then never starts there."""
    return k in capacity and demand <= capacity[k]


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

    def fitting(self, starts: np.ndarray, runtime: float, demand: int) -> np.ndarray:
        """Which of `starts` have room for the whole run (a boolean per start)."""
        b0 = (starts // self.bucket_s).astype(np.int64)
        b1 = np.maximum(b0 + 1, np.ceil((starts + runtime) / self.bucket_s).astype(np.int64))
        top = int(b1.max())
        if top >= len(self.used):
            self.used = np.concatenate([self.used, np.zeros(top - len(self.used) + 1024, dtype=np.int32)])
        pairs = np.empty(2 * len(b0), dtype=np.int64)
        pairs[0::2], pairs[1::2] = b0, b1
        return np.asarray(np.maximum.reduceat(self.used, pairs)[::2] <= self.total - demand)

    def first_fit(self, starts: list[float], runtime: float, demand: int) -> float | None:
        """The first of `starts` that `fits`: every start's span and busiest bucket in numpy calls
        (a Python span per start was most of the greedy's time)."""
        if not starts:
            return None
        room = np.flatnonzero(self.fitting(np.array(starts, dtype=np.float64), runtime, demand))
        return starts[int(room[0])] if len(room) else None


def offline_schedule(
    jobs: Sequence[SimJob],
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    *,
    bucket_s: float = 60.0,
    purse: Purse | None = None,
) -> OfflineSchedule:
    """The greedy clairvoyant schedule of the module docstring (within `purse`'s budgets if given)."""
    parts = _partitions(jobs, capacity, bucket_s)

    def saving(i: int) -> float:
        f = facts[i]
        options = [c for k, c in f.onprem.items() if k in parts]
        if not options:
            return -math.inf
        if f.cloud_cost is None:
            return math.inf  # must run on-prem: place these first
        return f.cloud_cost - min(options)

    order = sorted(range(len(jobs)), key=lambda i: (-saving(i), jobs[i].arrival_s, i))
    book = _Book(jobs, purse=purse)
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
                book.home(i, parts[k], k, start, c, j)
                placed = True
                break
        if not placed:
            book.elsewhere(i, j, f, parts, choices)
    return book.schedule("greedy")


@dataclass
class CapacityPrices:
    """What an accelerator-second of each partition is worth over time: the LP bound's capacity
    duals, constant on each of its buckets (`edges`), in cost per accelerator-second."""

    edges: np.ndarray
    per_partition: dict[str, np.ndarray]
    starts: dict[tuple[int, str], float] = field(default_factory=dict)
    """(job index, partition) -> where the LP started the job there, for jobs it put there:
    among starts the prices value alike (a degenerate LP prices contended hours at 0), the
    nearest one to the LP's wins."""
    _cumulative: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def occupancy(self, key: str, starts: np.ndarray, runtime: float) -> np.ndarray:
        """The price of holding one accelerator of `key` for `runtime` from each start."""
        edges, price = self.edges, self.per_partition[key]
        cum = self._cumulative.get(key)
        if cum is None:
            cum = self._cumulative[key] = np.concatenate(([0.0], np.cumsum(price * np.diff(edges))))

        # Both ends in one pass (this runs per job and partition: numpy's per-call overhead
        # dominated, np.clip's most of all).
        n, top = len(starts), len(price) - 1
        t = np.minimum(np.maximum(np.concatenate((starts + runtime, starts)), edges[0]), edges[-1])
        b = np.minimum(np.maximum(edges.searchsorted(t, side="right") - 1, 0), top)
        upto = cum[b] + price[b] * (t - edges[b])
        return np.asarray(upto[:n] - upto[n:], dtype=np.float64)


def priced_schedule(
    jobs: Sequence[SimJob],
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    prices: CapacityPrices,
    *,
    bucket_s: float = 60.0,
    step_s: float = 60.0,
    purse: Purse | None = None,
) -> OfflineSchedule:
    """The greedy with the LP bound's prices of capacity over time (a primal heuristic from the
    LP's duals): each on-time start of each partition is worth the job's saving less the price
    of the capacity it holds there; jobs claim capacity best net worth first, each at its best
    start that has room. The plain greedy's earliest start of the largest saving first fills
    the contended hours with patient jobs that could run later; on the bundled trace this one
    lands within a few percent of the LP bound where the plain greedy is 15-20% above it."""
    parts = _partitions(jobs, capacity, bucket_s)
    ranked: list[list[tuple[np.ndarray, np.ndarray, str, float]]] = []
    worth = np.full(len(jobs), -math.inf)
    for i, (j, f) in enumerate(zip(jobs, facts, strict=True)):
        cloud = math.inf if f.cloud_cost is None else f.cloud_cost
        starts = np.arange(0.0, j.max_wait_s, step_s)
        starts = np.append(starts, j.max_wait_s) + j.arrival_s  # (the window's last second too)
        options = []
        for k, c in f.onprem.items():
            if k not in parts or j.demand > parts[k].total or c >= cloud:
                continue
            net = -c - prices.occupancy(k, starts, j.runtime_s) * j.demand
            lp_start = prices.starts.get((i, k))
            if lp_start is not None:  # a tie-break: an hour from the LP's start costs 0.0036
                net = net - NEAR_LP_PER_S * np.abs(starts - lp_start)
            options.append((starts, net, k, c))
            worth[i] = max(worth[i], cloud + float(net.max()) if math.isfinite(cloud) else math.inf)
        ranked.append(options)
    order = sorted(range(len(jobs)), key=lambda i: (-worth[i], jobs[i].arrival_s, i))
    book = _Book(jobs, purse=purse)
    for i in order:
        j, f = jobs[i], facts[i]
        best: tuple[float, str, float, float] | None = None
        for starts, net, k, c in ranked[i]:
            room = parts[k].fitting(starts, j.runtime_s, j.demand)
            if room.any():
                at = int(np.flatnonzero(room)[np.argmax(net[room])])
                if best is None or net[at] > best[0]:
                    best = (float(net[at]), k, float(starts[at]), c)
        if best is not None:
            book.home(i, parts[best[1]], best[1], best[2], best[3], j)
        else:
            choices = sorted((c, k) for k, c in f.onprem.items() if k in parts)
            book.elsewhere(i, j, f, parts, choices)
    return book.schedule("priced")


def _partitions(
    jobs: Sequence[SimJob], capacity: Mapping[str, int], bucket_s: float
) -> dict[str, _Partition]:
    horizon = max((j.arrival_s + j.max_wait_s + j.runtime_s for j in jobs), default=0.0)
    buckets = int(horizon // bucket_s) + 2
    return {k: _Partition(n, buckets, bucket_s) for k, n in capacity.items() if n > 0}


@dataclass
class _Book:
    """A schedule as it is built: cost, counts and on-prem placements."""

    jobs: Sequence[SimJob]
    cost: float = 0.0
    onprem: int = 0
    cloud: int = 0
    unplaced: int = 0
    placements: dict[int, tuple[str, float]] = field(default_factory=dict)
    burst_late: set[int] = field(default_factory=set)
    purse: Purse | None = None
    """Tenants' budgets and the global cap, when the schedule keeps within them."""

    def home(self, i: int, part: _Partition, key: str, start: float, cost: float, job: SimJob) -> None:
        part.take(start, job.runtime_s, job.demand)
        self.placements[i] = (key, start)
        self.cost += cost
        self.onprem += 1

    def elsewhere(
        self, i: int, j: SimJob, f: JobFacts, parts: dict[str, _Partition], choices: list[tuple[float, str]]
    ) -> None:
        """A job with no on-time start at home: the cloud if its budget pays now, or else on-prem at
        the earliest start of the cheapest partition that can hold it (late, or on time where the
        cloud looked cheaper but its budget cannot pay), or else the cloud in the first later
        budget month that pays (late), or nowhere."""
        cloud = f.cloud_cost
        if cloud is not None and (self.purse is None or self.purse.pay(i, j, f, j.arrival_s)):
            self.cost += cloud
            self.cloud += 1
            return
        for c, k in choices:
            start = parts[k].earliest(j.arrival_s, math.inf, j.runtime_s, j.demand)
            if start is not None:  # (None: the partition is too small for it)
                self.home(i, parts[k], k, start, c, j)
                return
        if cloud is not None and self.purse is not None and self.purse.pay_later(i, j, f) is not None:
            self.cost += cloud
            self.cloud += 1
            self.burst_late.add(i)
        else:
            self.unplaced += 1

    def schedule(self, method: str) -> OfflineSchedule:
        late = late_count(self.jobs, self.placements, self.burst_late)
        return OfflineSchedule(
            self.cost, self.onprem, self.cloud, late, self.unplaced,
            method=method, placements=self.placements, burst_late=frozenset(self.burst_late),
        )
