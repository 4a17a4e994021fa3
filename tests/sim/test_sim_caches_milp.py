"""The offline MILP's matrix built with numpy equals the matrix as first built (issue 15, speed):
each window's columns, rows, coefficients and row bounds, so HiGHS solves the same problems.
The plain build (a list of (row, coefficient) per column) is kept here as it was."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

import broker.sim.lower_bound as lb
import broker.sim.offline_milp as om
from broker.model import JobSpec, TenantId
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob
from broker.sim.offline import offline_schedule


def _plain(
    jobs: Sequence[SimJob],
    capacity: Mapping[str, int],
    window: list[int],
    cands: list[tuple[int, str, float]],
    used: Mapping[str, np.ndarray],
) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
    rows: list[tuple[float, list[tuple[int, float]]]] = []
    for k in sorted({k for _, k, _ in cands}):
        mine = [
            (c, *om._span(s, jobs[i].runtime_s), jobs[i].demand)
            for c, (i, kk, s) in enumerate(cands)
            if kk == k
        ]
        col, b0, b1, d = (np.array(x) for x in zip(*mine, strict=True))
        cuts = np.unique(np.concatenate([b0, b1]))
        held = np.maximum.reduceat(used[k][: cuts[-1]], cuts[:-1])
        for t in range(len(cuts) - 1):
            active = (b0 <= cuts[t]) & (b1 >= cuts[t + 1])
            room = capacity[k] - int(held[t])
            if int(d[active].sum()) > room:
                rows.append(
                    (float(room), [(int(c), float(v)) for c, v in zip(col[active], d[active], strict=True)])
                )
    row_of = {i: r for r, i in enumerate(window)}
    n_x = len(cands)
    entries: list[list[tuple[int, float]]] = [[] for _ in range(n_x + len(window))]
    for c, (i, _, _) in enumerate(cands):
        entries[c].append((row_of[i], 1.0))
    for r in range(len(window)):
        entries[n_x + r].append((r, 1.0))
    for r, (_, coefs) in enumerate(rows):
        for c, v in coefs:
            entries[c].append((len(window) + r, v))
    start = np.cumsum([0] + [len(e) for e in entries]).astype(np.int32)
    index = np.array([r for e in entries for r, _ in e], dtype=np.int32)
    value = np.array([v for e in entries for _, v in e])
    return [u for u, _ in rows], start, index, value


def sim_job(i: int, arrival: float, runtime: float, demand: int, wait: float) -> SimJob:
    spec = JobSpec.model_validate({"name": f"j{i}", "command": ["x"], "runtime_estimate": f"{runtime}s"})
    return SimJob(i, f"j{i}", TenantId("t"), spec, arrival, runtime, demand, wait)


def _world(seed: int) -> tuple[list[SimJob], list[JobFacts], dict[str, int]]:
    rng = random.Random(seed)
    jobs, facts = [], []
    for i in range(150):
        runtime = rng.choice([600, 1800, 3600, 7200, 20000])
        wait = rng.choice([0, 900, 1800, 3600])
        jobs.append(sim_job(i, rng.uniform(0, 4 * 3600), runtime, rng.choice([1, 2, 4]), wait))
        home = {k: rng.uniform(1, 10) for k in rng.sample(["a", "b"], rng.choice([1, 2]))}
        facts.append(JobFacts((), home, None if rng.random() < 0.1 else rng.uniform(2, 30), {}))
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].arrival_s)
    jobs = [
        SimJob(
            n,
            jobs[i].id,
            jobs[i].tenant,
            jobs[i].spec,
            jobs[i].arrival_s,
            jobs[i].runtime_s,
            jobs[i].demand,
            jobs[i].max_wait_s,
        )
        for n, i in enumerate(order)
    ]
    return jobs, [facts[i] for i in order], {"a": 4, "b": 6}


@pytest.mark.parametrize("seed", range(4))
def test_each_windows_matrix_equals_the_plain_build(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs, facts, capacity = _world(seed)
    seen: list[tuple[Any, ...]] = []
    passed: list[Any] = []
    solve, real = om._solve, lb._quiet_highs  # (_solve imports _quiet_highs from lower_bound)

    def recording_solve(*args: Any) -> Any:
        if args[4]:  # a window with no options is not solved
            seen.append(copy.deepcopy(args))
        return solve(*args)

    def recording_highs() -> Any:
        h = real()
        run = h.passModel

        def pass_model(lp: Any) -> Any:
            passed.append(lp)
            return run(lp)

        h.passModel = pass_model
        return h

    monkeypatch.setattr(om, "_solve", recording_solve)
    monkeypatch.setattr(lb, "_quiet_highs", recording_highs)
    om.improve(jobs, facts, capacity, offline_schedule(jobs, facts, capacity), windows=4, window_jobs=40)
    assert len(seen) == len(passed) >= 3
    bound = 0
    for args, lp in zip(seen, passed, strict=True):
        js, _, cap, window, cands, used, _ = args
        upper, start, index, value = _plain(js, cap, window, cands, used)
        bound += len(upper)
        assert np.array_equal(np.asarray(lp.a_matrix_.start_), start)
        assert np.array_equal(np.asarray(lp.a_matrix_.index_), index)
        assert np.array_equal(np.asarray(lp.a_matrix_.value_), value)
        assert np.array_equal(np.asarray(lp.row_upper_), np.array([1.0] * len(window) + upper))
        assert lp.num_row_ == len(window) + len(upper)
    assert bound > 0  # some capacity rows could bind
