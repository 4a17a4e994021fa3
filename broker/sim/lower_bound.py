"""An offline lower bound on cost, from an LP relaxation solved with HiGHS.

Knowing the whole trace, what is the least cost (on-prem at shadow price + cloud at list
price) of any schedule in which at most `late` jobs start after their `max_wait`, given the
on-prem capacity of each partition over time? With `late = 0` that is "the least cost at
which every job could start within its max_wait". Every strategy's schedule is feasible
for the relaxation at its own count of late jobs, so the bound never exceeds its cost.

Relaxation, per job j (arrival a, run time r, max_wait w, demand d) and partition p:
- fractions: cloud `yc`, on time or late (cheapest allowed cloud offer, spot priced as if never interrupted:
  a strategy's spot run the world happened not to interrupt is billed just that, below its
  expected restarts as `broker.burst.spot` prices them; no provisioning delay),
  on-time on-prem `y[p]`, late on-prem `u[p]`, never started `z` (cost 0, late);
  yc + ycl + sum(y) + sum(u) + z = 1; ycl + sum(u) + sum(z) <= late; and for a strategy's own
  bound (`lateness`) sum(z) <= never, its jobs that never started (those it left late ran, and
  paid, somewhere), with late cloud runs `ycl`, in no budget row (a later month may pay them).
- on time, j runs inside [a, a+w+r] and always during [a+w, a+r] (when r > w): that
  mandatory part loads each time bucket by its overlap x d x y[p]; the rest, d x min(r, w)
  x y[p] accelerator-seconds, spreads freely over the buckets of [a, a+w] and [a+r, a+w+r]
  (at most d x the overlap in each bucket).
- late work d x r x u[p] arrives in a's bucket and is served, preemptively, by capacity
  left over in later buckets (or after the horizon).
- capacity: load of each bucket <= the partition's accelerators x the bucket's length.
- cash (`broker.sim.budgets.cash_rows`): per tenant and budget month, and per month for the global
  cap, the least cash of the cloud fractions <= the limit (with every voucher's balance on top).
"""

from __future__ import annotations

import bisect
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from broker.sim.budgets import CashRow
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob
from broker.sim.offline import CapacityPrices, holds

SLACK = 1e-7
"""Relative slack taken off the LP optimum (solver tolerances) so the bound stays below the true one."""


@dataclass
class _Cols:
    """The LP's columns, column-wise: each column's rows ascending (HiGHS's own order)."""

    cost: list[float]
    hi: list[float]
    start: list[int]
    index: list[int]
    value: list[float]

    def add(self, cost: float, hi: float, entries: list[tuple[int, float]]) -> int:
        """A column with its (row, coefficient) entries, rows ascending."""
        self.cost.append(cost)
        self.hi.append(hi)
        for row, v in entries:
            self.index.append(row)
            self.value.append(v)
        self.start.append(len(self.index))
        return len(self.cost) - 1


@dataclass(frozen=True)
class _Where:
    """A job's on-time columns in one partition: the column that puts it there, its spread
    columns with their midpoints, and the mandatory part's moment (load x time, per unit)."""

    column: int
    spread: list[tuple[int, float]]
    moment: float


class _Timed(Protocol):
    """What the bucket edges read of a job."""

    @property
    def arrival_s(self) -> float: ...
    @property
    def max_wait_s(self) -> float: ...
    @property
    def runtime_s(self) -> float: ...


def _points(jobs: Sequence[_Timed]) -> np.ndarray:
    """The jobs' own time points (arrival, deadline, ends), sorted and unique, from 0 to one
    second past the last."""
    pts = np.unique(
        np.array(
            [
                x
                for j in jobs
                for x in (
                    j.arrival_s,
                    j.arrival_s + j.max_wait_s,
                    j.arrival_s + j.runtime_s,
                    j.arrival_s + j.max_wait_s + j.runtime_s,
                )
            ],
            dtype=np.float64,
        )
    )
    return np.concatenate(([0.0], pts, [pts[-1] + 1.0]))


def _edges(jobs: Sequence[SimJob], max_buckets: int) -> list[float]:
    """Bucket edges at the jobs' own time points (arrival, deadline, ends), merged to at most
    `max_buckets` buckets; any bucketing gives a valid bound, finer ones a tighter bound."""
    pts = _points(jobs)
    xs: list[float] = pts.tolist()
    lo, hi = 0.0, float(pts[-1])
    edges = _merge(xs, lo)
    if len(edges) <= max_buckets + 1:
        return edges
    for _ in range(40):
        mid = (lo + hi) / 2
        if len(_merge(xs, mid)) > max_buckets + 1:
            lo = mid
        else:
            hi = mid
    return _merge(xs, hi)


def _merge(xs: list[float], gap: float) -> list[float]:
    """Keep each point of sorted `xs` at least `gap` after the last one kept (and the last point)."""
    out = [xs[0]]
    i, n = 1, len(xs)
    while i < n:
        last = out[-1]
        # The next point kept: the first with x - last >= gap (x - last grows with x), found by
        # bisection instead of a scan, as the bisection on `gap` in `_edges` calls this 40 times:
        # searched for last + gap, then moved to where x - last >= gap starts (the two can differ
        # in the last bit, and the plain scan tests x - last).
        first, i = i, bisect.bisect_left(xs, last + gap, i, n)
        while i > first and xs[i - 1] - last >= gap:
            i -= 1
        while i < n and xs[i] - last < gap:
            i += 1
        if i < n:
            out.append(xs[i])
            i += 1
    if out[-1] < xs[-1]:
        out.append(xs[-1])
    return out


def _quiet_highs() -> Any:
    """A single-threaded Highs instance; its constructor prints a copyright banner to stdout's
    fd (where `--output json` goes) whatever `output_flag` says, so send it to /dev/null.
    HiGHS starts one thread pool per process at its first run and refuses a run asking for
    another thread count later (the MILP's status stays unset and its window keeps the
    greedy), so every solve here asks for the same one thread, in whatever order they run."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        h = highspy.Highs()  # type: ignore[no-untyped-call]
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
    h.setOptionValue("threads", 1)
    return h


class _Model:
    """The LP's columns and row bounds as they are added (rows: per partition and bucket the
    capacity and the late-work flow, the late-count and never-started rows, the cash rows, then per
    job its own)."""

    def __init__(
        self,
        edges: list[float],
        keys: list[str],
        capacity: Mapping[str, int],
        cash: Sequence[CashRow] = (),
        lateness: bool = False,
    ) -> None:
        self.edges = edges
        self.nb = nb = len(edges) - 1
        self.cap_row = {k: i * nb for i, k in enumerate(keys)}
        self.flow_row = {k: len(keys) * nb + i * nb for i, k in enumerate(keys)}
        self.late_row = 2 * len(keys) * nb
        self.never_row = self.late_row + 1 if lateness else None
        """With `lateness`: the never-started row, and each job's late cloud column (`LowerBound`)."""
        extra = 1 if lateness else 0
        self.n_rows = self.late_row + 1 + extra
        self.lower = [-math.inf] * (len(keys) * nb) + [0.0] * (len(keys) * nb) + [-math.inf] * (1 + extra)
        self.upper = [capacity[k] * (edges[b + 1] - edges[b]) for k in keys for b in range(nb)]
        self.upper += [0.0] * (len(keys) * nb) + [0.0] * (1 + extra)
        self.cols = _Cols([], [], [0], [], [])
        self.where: dict[tuple[int, str], _Where] = {}
        # Per partition: served[b] and carry[b] (late work carried from bucket b to b+1).
        for k in keys:
            for b in range(nb):
                self.cols.add(0.0, math.inf, [(self.cap_row[k] + b, 1.0), (self.flow_row[k] + b, 1.0)])
                carry = [(self.flow_row[k] + b, 1.0)]
                if b + 1 < nb:
                    carry.append((self.flow_row[k] + b + 1, -1.0))
                self.cols.add(0.0, math.inf, carry)
        # Budgets bound the cloud fractions' cash: a job's cloud column enters its month's rows.
        self.cash_of: dict[int, list[tuple[int, float]]] = {}
        self.cash_rows: list[tuple[int, float]] = []
        for limit in cash:
            at = self.row(-math.inf, limit.limit)
            self.cash_rows.append((at, limit.limit))
            for i, least in limit.jobs:
                self.cash_of.setdefault(i, []).append((at, least))

    def row(self, lo: float, hi: float) -> int:
        self.lower.append(lo)
        self.upper.append(hi)
        self.n_rows += 1
        return self.n_rows - 1

    def span(self, x: float, y: float) -> list[tuple[int, float, float]]:
        """(bucket, seconds of overlap, the overlap's midpoint) of the interval [x, y)."""
        edges = self.edges
        out: list[tuple[int, float, float]] = []
        if y <= x:
            return out
        b = max(0, bisect.bisect_right(edges, x) - 1)
        while b < self.nb and edges[b] < y:
            lo, hi = max(x, edges[b]), min(y, edges[b + 1])
            if hi > lo:
                out.append((b, hi - lo, (lo + hi) / 2))
            b += 1
        return out

    def add_job(self, i: int, j: SimJob, f: JobFacts, capacity: Mapping[str, int]) -> None:
        """The job's columns (each column's rows ascending: capacity and flow rows, the late row,
        then the job's own rows in the order they are made), noted in `where` by (job, partition)."""
        a, r, w, d = j.arrival_s, j.runtime_s, j.max_wait_s, float(j.demand)
        cols, late, assign = self.cols, self.late_row, self.row(1.0, 1.0)
        # Never starting (e.g. no budget can pay) costs nothing and counts as late, as in
        # the strategies' own counts: so the bound at their late count stays below them.
        never = [] if self.never_row is None else [(self.never_row, 1.0)]
        cols.add(0.0, 1.0, [(late, 1.0), *never, (assign, 1.0)])
        floor = f.cloud_cost if f.cloud_floor is None else f.cloud_floor
        if floor is not None:  # spot at no interruption: what a lucky spot run is billed
            cols.add(floor, 1.0, [*self.cash_of.get(i, ()), (assign, 1.0)])
            if self.never_row is not None:  # late in the cloud: burst later, in a later budget month
                cols.add(floor, 1.0, [(late, 1.0), (assign, 1.0)])
        # The buckets the job touches are the same in every partition: found once.
        arrive = min(self.nb - 1, max(0, bisect.bisect_right(self.edges, a) - 1))
        flex = min(r, w)
        fixed = self.span(a + w, a + r)
        mandatory = [(b, d * ov) for b, ov, _ in fixed]
        moment = sum(d * ov * mid for _, ov, mid in fixed)
        windows = [(a, a + w + r)] if r <= w else [(a, a + w), (a + r, a + w + r)]
        free = [(b, d * ov, mid) for x, y in windows for b, ov, mid in self.span(x, y)] if flex > 0 else []
        for k, cost in f.onprem.items():
            if not holds(capacity, k, j.demand):
                continue
            cap, flow = self.cap_row[k], self.flow_row[k]
            cols.add(cost, 1.0, [(flow + arrive, -d * r), (late, 1.0), (assign, 1.0)])
            entries = [(cap + b, v) for b, v in mandatory]
            entries.append((assign, 1.0))
            spread: list[tuple[int, float]] = []
            if flex > 0:
                frow = self.row(0.0, 0.0)
                for b, hi, mid in free:
                    spread.append((cols.add(0.0, hi, [(cap + b, 1.0), (frow, 1.0)]), mid))
                entries.append((frow, -d * flex))
            self.where[(i, k)] = _Where(cols.add(cost, 1.0, entries), spread, moment)


class LowerBound:
    """The LP, built once; `solve(late)` re-solves it for another late-job allowance (`lateness`:
    the never-started row and late cloud runs of a strategy's own bound, in the module docstring)."""

    def __init__(
        self,
        jobs: Sequence[SimJob],
        facts: Sequence[JobFacts],
        capacity: Mapping[str, int],
        *,
        max_buckets: int = 100,
        cash: Sequence[CashRow] = (),
        lateness: bool = False,
    ) -> None:
        todo = []
        left_out = []
        for i, (j, f) in enumerate(zip(jobs, facts, strict=True)):
            if f.cloud_cost is not None or any(holds(capacity, k, j.demand) for k in f.onprem):
                todo.append((i, j, f))
            elif f.allowed:
                left_out.append(i)
        self.jobs = len(todo)
        self.left_out = frozenset(left_out)
        """Jobs with allowed offers that no option can start (no partition, no payable cloud)."""
        self.cost_floor = 0.0
        if not todo:
            self._h = None
            return
        edges = _edges([j for _, j, _ in todo], max_buckets)
        model = _Model(edges, sorted(capacity), capacity, cash, lateness)
        for i, j, f in todo:
            model.add_job(i, j, f, capacity)
        self._late_row, self._never_row = model.late_row, model.never_row
        self._cash = model.cash_rows
        self._edges, self._cap_rows = np.array(model.edges), (dict(model.cap_row), model.nb)
        self._where, self._jobs = model.where, jobs
        self._build(model.cols, model.lower, model.upper, model.n_rows)

    def _build(self, cols: _Cols, lower: list[float], upper: list[float], n_rows: int) -> None:
        import highspy

        lp = highspy.HighsLp()
        lp.num_col_ = len(cols.cost)
        lp.num_row_ = n_rows
        lp.col_cost_ = np.array(cols.cost, dtype=np.float64)
        lp.col_lower_ = np.zeros(len(cols.cost), dtype=np.float64)
        hi = np.array(cols.hi, dtype=np.float64)
        hi[np.isinf(hi)] = highspy.kHighsInf
        lp.col_upper_ = hi
        lo = np.array(lower, dtype=np.float64)
        lo[np.isinf(lo)] = -highspy.kHighsInf
        lp.row_lower_ = lo
        lp.row_upper_ = np.array(upper, dtype=np.float64)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.array(cols.start, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(cols.index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(cols.value, dtype=np.float64)
        h = _quiet_highs()
        h.setOptionValue("output_flag", False)
        h.passModel(lp)
        self._h = h
        self._inf = highspy.kHighsInf

    def solve(self, late: int, never: int | None = None) -> float | None:
        """The bound when at most `late` jobs may start after their max_wait, `never` of them (all
        `late` if None) not at all (None: infeasible)."""
        if self._h is None:
            return 0.0
        h = self._h
        h.changeRowBounds(self._late_row, -self._inf, float(max(0, late)))
        if self._never_row is not None:
            h.changeRowBounds(self._never_row, -self._inf, float(max(0, late if never is None else never)))
        if not self._run_within_budgets():
            return None
        value = float(h.getInfo().objective_function_value)
        # No cost is negative: a bound of 0 (every job may go unstarted) stays 0, not -SLACK,
        # whose ratio would be a cost over -1e-7.
        return max(0.0, value - SLACK * max(1.0, abs(value)))

    def _run_within_budgets(self) -> bool:
        """Solve; the cash rows go in only when the optimum without them breaks one. A row that does
        not bind leaves the bound as it is but may move HiGHS to another optimal vertex, whose
        capacity duals price the offline schedule differently (+0.4% on alibaba-peak)."""
        h = self._h
        assert h is not None
        for at, _ in self._cash:
            h.changeRowBounds(at, -self._inf, self._inf)
        h.run()
        optimal = h.modelStatusToString(h.getModelStatus()) == "Optimal"
        if not optimal or not self._cash:
            return optimal
        activity = h.getSolution().row_value
        if all(activity[at] <= limit for at, limit in self._cash):
            return True
        for at, limit in self._cash:
            h.changeRowBounds(at, -self._inf, limit)
        h.run()
        return bool(h.modelStatusToString(h.getModelStatus()) == "Optimal")

    def capacity_prices(self) -> CapacityPrices | None:
        """The last solve's capacity duals: what one more accelerator-second of each partition
        in each bucket would have saved (None: nothing solved, or no capacity row)."""
        if self._h is None or self._h.modelStatusToString(self._h.getModelStatus()) != "Optimal":
            return None
        duals = np.asarray(self._h.getSolution().row_dual, dtype=np.float64)
        rows, nb = self._cap_rows
        # A capacity row is `load <= capacity`: its dual is <= 0 in a minimisation (HiGHS's sign).
        prices = {k: np.maximum(0.0, -duals[r : r + nb]) for k, r in rows.items()}
        x = np.asarray(self._h.getSolution().col_value, dtype=np.float64)
        return CapacityPrices(self._edges, prices, self._starts(x))

    def _starts(self, x: np.ndarray) -> dict[tuple[int, str], float]:
        """Where the last solve started each job it put on-time in a partition: the start whose
        run has the same centre of load as the LP's (mandatory part and spread together)."""
        out: dict[tuple[int, str], float] = {}
        for (i, k), w in self._where.items():
            y = x[w.column]
            if y < 1e-6:
                continue
            j = self._jobs[i]
            mass = j.demand * j.runtime_s * y
            centre = (w.moment * y + sum(x[c] * mid for c, mid in w.spread)) / mass
            out[(i, k)] = min(j.arrival_s + j.max_wait_s, max(j.arrival_s, centre - j.runtime_s / 2))
        return out
