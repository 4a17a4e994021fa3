"""The greedy offline schedule improved by a HiGHS MILP over time windows (where it fits).

The greedy (`broker.sim.offline`) decides jobs one at a time. Here, for the windows of the
trace where the greedy spent most in the cloud, the jobs of the window that could go either
way are taken out of the schedule and re-decided together by a small MILP: each job goes to
the cloud (at its expected cost) or starts on an on-prem partition at one of a few on-time
start times (arrival, every `step_s`, arrival + max_wait, and its greedy start), with every
bucket's accelerators (what the rest of the schedule holds there plus the window's jobs)
within the partition. The greedy assignment is one solution of each MILP, so a window is
only replaced by a cheaper feasible one: the result never costs more than the greedy and
stays feasible (`check` re-verifies the whole schedule from scratch). The windows share a
wall-clock budget: a window that does not fit it (or `MAX_NONZEROS`) keeps the greedy's choices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from broker.sim.budgets import Purse
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob
from broker.sim.offline import OfflineSchedule, late_count

BUCKET_S = 60.0
"""The greedy's time buckets (a job holds every bucket it touches)."""
MAX_NODES = 300
"""Branch-and-bound nodes per window; the time budget is only a safety net."""
GAP = 5e-3
"""Relative MILP gap per window. A window's jobs cost ~200 CNY of a ~15,500 CNY schedule, so
0.5% of it moves the total by well under 0.1%; 1e-3 cost a third more CPU (HiGHS closing the
last tenths of a percent at the root) for the same 8k alibaba-peak schedule."""
MAX_STARTS = 24
"""On-time starts tried per job and partition after its arrival: every `step_s` up to 4 h of
max_wait (every job of the 8k trace), evenly sparser for a longer one (1 d: hourly). An option of
a job that runs for days sits in every capacity row it spans, so a window grew with the square of
its starts: 7-day waits every 10 min made a MILP of 2.5 M nonzeros whose presolve ran 100 s."""
MAX_NONZEROS = 200_000
"""A window whose MILP has more nonzeros keeps the greedy's choices: HiGHS's presolve does not
stop at the time limit, and took ~4 s per 100k nonzeros of such windows (the 8k trace's: <60k)."""
BUDGET_S, BUDGET_PER_JOB_S, BUDGET_MAX_S = 5.0, 0.003, 60.0
"""CPU seconds of this process for all windows together: 5 s and 3 ms a job, at most 60 (each HiGHS
run gets what is left, at most its own limit). The 8k trace's (7,214 jobs) six windows take ~4 s of its 27 s
(the greedy and its windows 7-14 s at a load of 6 on 2 cores): it binds on small traces, not there.
Counted on the CPU, not the wall clock: at a load of 10 on 2 cores a window that needs 0.8 s of CPU
took 5 s, the budget ran out and the offline reference fell back to the greedy's, so what a trace's
reference cost came out at depended on what else the machine ran."""
WALL_LIMIT_S = 120.0
"""Wall-clock seconds a window may take however little CPU it is given (a safety net)."""


@dataclass
class _Clock:
    """The windows' shared time budget, and how many of them it (or `MAX_NONZEROS`) cut short."""

    ends: float
    per_window: float
    short: int = 0

    def left(self) -> float:
        return min(self.per_window, self.ends - time.process_time())

    def bound(self, h: Any) -> None:
        """Interrupt HiGHS run `h` once it has spent what is left (on the CPU: HiGHS's own time
        limit is the wall clock's, here only `WALL_LIMIT_S`)."""
        import highspy

        stop_at = time.process_time() + max(self.left(), 0.01)

        def spent(_kind: int, _message: str, _out: Any, data_in: Any, _user: Any) -> None:
            if time.process_time() >= stop_at:
                data_in.user_interrupt = True

        h.setOptionValue("time_limit", WALL_LIMIT_S)
        h.setCallback(spent, None)
        for kind in (highspy.cb.HighsCallbackType.kCallbackMipInterrupt,
                     highspy.cb.HighsCallbackType.kCallbackSimplexInterrupt):
            h.startCallback(kind)


def _span(start: float, runtime: float) -> tuple[int, int]:
    b0 = int(start // BUCKET_S)
    return b0, max(b0 + 1, math.ceil((start + runtime) / BUCKET_S))


def usage(
    jobs: Sequence[SimJob], placements: Mapping[int, tuple[str, float]], size: int
) -> dict[str, np.ndarray]:
    """Accelerators held per partition and bucket by the on-prem placements."""
    used: dict[str, np.ndarray] = {}
    for i, (k, start) in placements.items():
        b0, b1 = _span(start, jobs[i].runtime_s)
        arr = used.setdefault(k, np.zeros(size, dtype=np.int64))
        arr[b0:b1] += jobs[i].demand
    return used


def _horizon(jobs: Sequence[SimJob], placements: Mapping[int, tuple[str, float]]) -> int:
    ends = [_span(s, jobs[i].runtime_s)[1] for i, (_, s) in placements.items()]
    latest = max((j.arrival_s + j.max_wait_s + j.runtime_s for j in jobs), default=0.0)
    return max([*ends, math.ceil(latest / BUCKET_S) + 2]) + 1


def check(
    jobs: Sequence[SimJob], facts: Sequence[JobFacts], capacity: Mapping[str, int], sched: OfflineSchedule
) -> list[str]:
    """Every way the schedule breaks the rules (empty: feasible), recomputed from its placements."""
    problems = []
    used = usage(jobs, sched.placements, _horizon(jobs, sched.placements))
    for k, arr in used.items():
        if k not in capacity or int(arr.max()) > capacity[k]:
            problems.append(f"{k}: {int(arr.max())} accelerators in use, {capacity.get(k, 0)} exist")
    cost = 0.0
    for i, (j, f) in enumerate(zip(jobs, facts, strict=True)):
        placed = sched.placements.get(i)
        if placed is None:
            cost += f.cloud_cost or 0.0
            continue
        k, start = placed
        if k not in f.onprem:
            problems.append(f"job {i}: partition {k} is not allowed for it")
            continue
        cost += f.onprem[k]
        late = start > j.arrival_s + j.max_wait_s + 1e-6
        if start < j.arrival_s - 1e-6 or (late and f.cloud_cost is not None):
            problems.append(
                f"job {i}: starts at {start:.0f}, window [{j.arrival_s:.0f}, +{j.max_wait_s:.0f}]"
            )
    if not math.isclose(cost, sched.cost, rel_tol=1e-9, abs_tol=1e-6):
        problems.append(f"cost {sched.cost:.2f} but the placements cost {cost:.2f}")
    return problems


def cheaper(a: OfflineSchedule, b: OfflineSchedule | None) -> OfflineSchedule:
    """The cheaper of two feasible offline schedules (the reference is the best one found)."""
    return b if b is not None and b.cost < a.cost else a


def improve(
    jobs: Sequence[SimJob],
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    greedy: OfflineSchedule,
    *,
    windows: int = 6,
    window_jobs: int = 60,
    step_s: float = 600.0,
    time_limit_s: float = 15.0,
    budget_s: float | None = None,
    purse: Purse | None = None,
    beat: float | None = None,
) -> OfflineSchedule:
    """The greedy schedule with its `windows` dearest windows re-decided by a MILP each (kept only
    if its bursts still fit `purse`, the budgets the greedy kept within), within `budget_s` seconds
    (default: `BUDGET_S` and `BUDGET_PER_JOB_S` a job, at most `BUDGET_MAX_S`). With `beat`, the
    cost of a schedule the result is only of use below (the priced one, `cheaper`): when even
    saving each window's whole excess over its jobs' cheapest options could not get there, no
    MILP is solved and the greedy comes back as it is (on the 8k trace, HiGHS's ~4 s)."""
    flexible = [
        i
        for i in sorted(range(len(jobs)), key=lambda i: (jobs[i].arrival_s, i))
        if facts[i].cloud_cost is not None and any(k in capacity for k in facts[i].onprem)
    ]
    placements = dict(greedy.placements)
    chunks = [flexible[n : n + window_jobs] for n in range(0, len(flexible), window_jobs)]
    spent = [sum(facts[i].cloud_cost or 0.0 for i in c if i not in placements) for c in chunks]
    dearest = sorted(range(len(chunks)), key=lambda n: -spent[n])[:windows]
    if beat is not None:
        floor = greedy.cost - _most_saved(facts, capacity, chunks, dearest, placements)
        if floor > beat + 1e-6 * (1.0 + abs(beat)):  # (a margin for the sums' rounding)
            return greedy
    used = usage(jobs, placements, _horizon(jobs, placements))
    if budget_s is None:
        budget_s = min(BUDGET_MAX_S, BUDGET_S + BUDGET_PER_JOB_S * len(jobs))
    saved, clock = 0.0, _Clock(time.process_time() + budget_s, time_limit_s)
    for n in sorted(dearest):
        if clock.left() <= 0:  # out of time: this window keeps the greedy's choices
            clock.short += 1
            continue
        saved += _window(jobs, facts, capacity, chunks[n], placements, used, step_s, clock)
    kept = replace(greedy, milp_cut_short=clock.short)
    if saved <= 1e-6:
        return kept
    # The MILP knows no budget: a job it moved to the cloud may not be payable.
    was_cloud = [*(purse.paid if purse is not None else ()), *greedy.placements]
    if purse is not None and not purse.holds(jobs, facts, [i for i in was_cloud if i not in placements]):
        return kept
    onprem = len(placements)
    return replace(
        kept,
        cost=greedy.cost - saved,
        onprem_jobs=onprem,
        cloud_jobs=greedy.cloud_jobs - (onprem - greedy.onprem_jobs),
        late_jobs=late_count(jobs, placements, greedy.burst_late),
        method=f"{greedy.method}+milp",
        placements=placements,
    )


def _most_saved(
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    chunks: list[list[int]],
    dearest: list[int],
    placements: Mapping[int, tuple[str, float]],
) -> float:
    """What the windows could save at most: each job of each from its greedy cost down to its
    cheapest option (a window re-decides only its own jobs, so each starts from the greedy's)."""
    most = 0.0
    for i in (i for n in dearest for i in chunks[n]):
        f = facts[i]
        now = f.onprem[placements[i][0]] if i in placements else f.cloud_cost or 0.0
        most += now - min([f.cloud_cost or 0.0, *(c for k, c in f.onprem.items() if k in capacity)])
    return most


def _window(
    jobs: Sequence[SimJob],
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    window: list[int],
    placements: dict[int, tuple[str, float]],
    used: dict[str, np.ndarray],
    step_s: float,
    clock: _Clock,
) -> float:
    """Re-decide one window's jobs together; apply and return the saving (0: greedy kept)."""
    before = sum(
        facts[i].onprem[placements[i][0]] if i in placements else facts[i].cloud_cost or 0.0 for i in window
    )
    for i in window:  # take the window's jobs out of the schedule
        if i in placements:
            k, s = placements[i]
            b0, b1 = _span(s, jobs[i].runtime_s)
            used[k][b0:b1] -= jobs[i].demand
    cands = _candidates(jobs, facts, capacity, window, placements, used, step_s)
    chosen = _solve(jobs, facts, capacity, window, cands, used, clock)
    after = (
        None
        if chosen is None
        else sum(facts[i].onprem[chosen[i][0]] if i in chosen else facts[i].cloud_cost or 0.0 for i in window)
    )
    if chosen is None or after is None or after >= before - 1e-6:
        chosen, after = {i: placements[i] for i in window if i in placements}, before
    for i in window:
        placements.pop(i, None)
        if i in chosen:
            k, s = placements[i] = chosen[i]
            b0, b1 = _span(s, jobs[i].runtime_s)
            used[k][b0:b1] += jobs[i].demand
    return before - after


def _candidates(
    jobs: Sequence[SimJob],
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    window: list[int],
    placements: Mapping[int, tuple[str, float]],
    used: Mapping[str, np.ndarray],
    step_s: float,
) -> list[tuple[int, str, float]]:
    """(job, partition, start) options that fit beside the rest of the schedule and save money."""
    out = []
    for i in window:
        j, f = jobs[i], facts[i]
        for k, c in f.onprem.items():
            if k not in capacity or k not in used or f.cloud_cost is None or c >= f.cloud_cost:
                continue
            step = max(step_s, j.max_wait_s / MAX_STARTS)
            starts = {j.arrival_s + m * step for m in range(int(j.max_wait_s // step) + 1)}
            starts.add(j.arrival_s + j.max_wait_s)
            if placements.get(i, ("", 0.0))[0] == k:
                starts.add(placements[i][1])
            for s in sorted(starts):
                b0, b1 = _span(s, j.runtime_s)
                if b1 <= len(used[k]) and int(used[k][b0:b1].max()) + j.demand <= capacity[k]:
                    out.append((i, k, s))
    return out


def _capacity_rows(
    jobs: Sequence[SimJob],
    capacity: Mapping[str, int],
    cands: list[tuple[int, str, float]],
    used: Mapping[str, np.ndarray],
    most: int,
) -> list[tuple[float, np.ndarray, np.ndarray]] | None:
    """Per partition and stretch of buckets where the same options overlap: their accelerators
    within what the rest of the schedule leaves free there (rows that cannot bind are left out),
    as (room, the options' columns, their accelerators); None past `most` nonzeros in all."""
    rows: list[tuple[float, np.ndarray, np.ndarray]] = []
    nonzeros = 0
    for k in sorted({k for _, k, _ in cands}):
        mine = [
            (c, *_span(s, jobs[i].runtime_s), jobs[i].demand) for c, (i, kk, s) in enumerate(cands) if kk == k
        ]
        col, b0, b1, d = (np.array(x) for x in zip(*mine, strict=True))
        cuts = np.unique(np.concatenate([b0, b1]))
        held = np.maximum.reduceat(used[k][: cuts[-1]], cuts[:-1])
        for t in range(len(cuts) - 1):
            active = (b0 <= cuts[t]) & (b1 >= cuts[t + 1])
            room = capacity[k] - int(held[t])
            if int(d[active].sum()) > room:
                rows.append((float(room), col[active], d[active]))
                nonzeros += len(rows[-1][1])
                if nonzeros > most:
                    return None
    return rows


def _matrix(
    assign: list[int], n_window: int, rows: list[tuple[float, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MILP's columns (each option's assignment row `assign[c]`, then one cloud column per
    window job) as column-wise (start, index, value): in each column its assignment row first,
    then its capacity rows (`n_window` + their number) in order."""
    n_x = len(assign)
    n_cols = n_x + n_window
    counts = [len(c) for _, c, _ in rows]
    at = np.concatenate([np.arange(n_cols), *(c for _, c, _ in rows)]).astype(np.int64)
    row = np.concatenate([assign, np.arange(n_window), np.repeat(n_window + np.arange(len(rows)), counts)])
    value = np.concatenate([np.ones(n_cols), *(d for _, _, d in rows)]).astype(np.float64)
    order = np.argsort(at, kind="stable")  # per column: its rows in the order written, ascending
    start = np.concatenate([[0], np.cumsum(np.bincount(at, minlength=n_cols))]).astype(np.int32)
    return start, row[order].astype(np.int32), value[order]


def _solve(
    jobs: Sequence[SimJob],
    facts: Sequence[JobFacts],
    capacity: Mapping[str, int],
    window: list[int],
    cands: list[tuple[int, str, float]],
    used: Mapping[str, np.ndarray],
    clock: _Clock,
) -> dict[int, tuple[str, float]] | None:
    """The MILP of the module docstring; the chosen on-prem starts (the best found when cut short
    by the clock), or None if none was found or the model is over `MAX_NONZEROS`."""
    import highspy

    from broker.sim.lower_bound import _quiet_highs

    if not cands:
        return None
    row_of = {i: r for r, i in enumerate(window)}
    rows = _capacity_rows(jobs, capacity, cands, used, MAX_NONZEROS - len(cands) - len(window))
    if rows is None:
        clock.short += 1
        return None
    costs = [facts[i].onprem[k] for i, k, _ in cands] + [facts[i].cloud_cost or 0.0 for i in window]
    start, index, value = _matrix([row_of[i] for i, _, _ in cands], len(window), rows)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(costs), len(window) + len(rows)
    lp.col_cost_ = np.array(costs)
    lp.col_lower_, lp.col_upper_ = np.zeros(len(costs)), np.ones(len(costs))
    lp.row_lower_ = np.array([1.0] * len(window) + [-highspy.kHighsInf] * len(rows))
    lp.row_upper_ = np.array([1.0] * len(window) + [u for u, _, _ in rows])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = start, index, value
    lp.integrality_ = [highspy.HighsVarType.kInteger] * len(costs)
    h = _quiet_highs()
    h.setOptionValue("output_flag", False)
    clock.bound(h)
    h.setOptionValue("mip_rel_gap", GAP)
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_max_nodes", MAX_NODES)  # a work limit, so the result does not depend on load
    h.passModel(lp)
    h.run()
    if h.getModelStatus() in (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kInterrupt):
        clock.short += 1
    if h.getInfo().primal_solution_status != 2:  # no feasible solution found
        return None
    x = h.getSolution().col_value
    return {i: (k, s) for c, (i, k, s) in enumerate(cands) if x[c] > 0.5}
