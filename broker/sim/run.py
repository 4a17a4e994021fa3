"""One simulation: the policy under test, the baselines and the lower bound, into one result."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from broker.policy import Policy
from broker.sim.backends import onprem_partitions
from broker.sim.baselines import BASELINES, Baseline
from broker.sim.engine import Engine
from broker.sim.fairness import tenant_summary
from broker.sim.jobs import SimJob, all_facts
from broker.sim.lower_bound import LowerBound
from broker.sim.metrics import RunResult, late, summarize
from broker.sim.offline import OfflineSchedule, offline_schedule
from broker.sim.scenario import Scenario
from broker.sim.state import Strategy
from broker.sim.strategies import PolicyStrategy

Progress = Callable[[str, int, int], None]
"""(phase, done, total)."""


@dataclass
class Simulation:
    result: dict[str, Any]
    runs: dict[str, RunResult] = field(default_factory=dict)


def simulate(
    policy: Policy,
    jobs: Sequence[SimJob],
    scenario: Scenario,
    *,
    baselines: Sequence[str] = BASELINES,
    lower_bound: bool = True,
    per_strategy_bounds: bool = False,
    parallel: bool = True,
    progress: Progress | None = None,
) -> Simulation:
    """Run every strategy on the same jobs and world, then bound the cost from below.

    With `parallel`, the baselines and the bound run in a forked process beside the policy run.
    """
    started = time.perf_counter()

    def tick(phase: str) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda done: progress(phase, done, len(jobs))

    def others(
        report: bool = True,
    ) -> tuple[dict[str, RunResult], float | None, dict[int, float | None], float, OfflineSchedule | None]:
        """Facts, baselines and the bound at 0 and at each baseline's late count (if asked),
        with the seconds the bound took to build and solve, and the offline schedule."""
        done: dict[str, RunResult] = {}
        if not (baselines or lower_bound) or not jobs:
            return done, None, {}, 0.0, None
        if progress is not None and report:
            progress("placement facts", 0, len(jobs))
        facts = all_facts(jobs, policy)
        for name in baselines:
            strategy: Strategy = Baseline(name, policy, facts)  # type: ignore[arg-type]
            done[name] = Engine(
                policy, jobs, scenario, strategy, progress=tick(name) if report else None
            ).run()
        if not lower_bound:
            return done, None, {}, 0.0, None
        capacity = {k: p.total for k, p in onprem_partitions(policy, scenario.onprem_gpus).items()}
        offline = offline_schedule(jobs, facts, capacity)
        lb_started = time.perf_counter()
        bound = LowerBound(jobs, facts, capacity)
        solved: dict[int, float | None] = {0: bound.solve(0)}
        if per_strategy_bounds:
            for run in done.values():
                n = _late_count(run)
                if n not in solved:
                    solved[n] = bound.solve(n)
            global _BOUND
            _BOUND = bound
        return done, solved[0], solved, time.perf_counter() - lb_started, offline

    runs: dict[str, RunResult] = {}
    if parallel and not per_strategy_bounds and (baselines or lower_bound) and _can_fork():
        global _TASK
        _TASK = lambda: others(report=False)  # noqa: E731  (inherited by the forked worker)
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            future = pool.submit(_run_task)
            runs["policy"] = Engine(
                policy, jobs, scenario, PolicyStrategy(policy), progress=tick("policy")
            ).run()
            if progress is not None:
                progress("baselines, bound", 0, 1)
            done, full, solved, lb_s, offline = future.result()
    else:
        runs["policy"] = Engine(policy, jobs, scenario, PolicyStrategy(policy), progress=tick("policy")).run()
        done, full, solved, lb_s, offline = others()
    runs.update(done)
    strategies = {name: summarize(run) for name, run in runs.items()}
    strategies["policy"].update(tenant_summary(runs["policy"], policy))
    out: dict[str, Any] = {"strategies": strategies, "lower_bound_cost": None, "cost_ratio": None}
    if lower_bound and jobs:
        n_policy = _late_count(runs["policy"])
        if per_strategy_bounds and n_policy not in solved and _BOUND is not None:
            again = time.perf_counter()
            solved[n_policy] = _BOUND.solve(n_policy)
            lb_s += time.perf_counter() - again
        for name, run in runs.items():
            n_late = _late_count(run)
            lb = solved.get(n_late)
            strategies[name]["late_jobs_allowed_in_bound"] = n_late
            strategies[name]["lower_bound_cost"] = None if lb is None else round(lb, 2)
            strategies[name]["cost_ratio"] = round(strategies[name]["cost"] / lb, 4) if lb else None
        out["lower_bound_cost"] = None if full is None else round(full, 2)
        out["cost_ratio"] = round(strategies["policy"]["cost"] / full, 4) if full else None
        if strategies["policy"]["cost_ratio"] is None and full:
            # Its own bound (as many late jobs as it had) was not solved: the policy's row shows
            # its ratio to the all-on-time bound instead of nothing (a bound with no late jobs).
            strategies["policy"].update(
                lower_bound_cost=out["lower_bound_cost"],
                cost_ratio=out["cost_ratio"],
                late_jobs_allowed_in_bound=0,
            )
        out["lower_bound_s"] = round(lb_s, 2)
    if offline is not None:
        # The feasible clairvoyant schedule: the yardstick at the peaks, where the LP is loose.
        policy_cost = strategies["policy"]["cost"]
        out["offline_cost"] = round(offline.cost, 2)
        out["offline_ratio"] = round(policy_cost / offline.cost, 4) if offline.cost else None
        out["offline"] = {
            "onprem_jobs": offline.onprem_jobs,
            "cloud_jobs": offline.cloud_jobs,
            "late_jobs": offline.late_jobs,
            "unplaced": offline.unplaced,
        }
    out["frontier"] = frontier(strategies)
    out["sim_wall_s"] = round(time.perf_counter() - started, 2)
    return Simulation(out, runs)


_BOUND: LowerBound | None = None
"""The last bound built in this process (re-solved for the policy's late count)."""


def _late_count(run: RunResult) -> int:
    return sum(1 for r in run.records if not r.rejected and late(r))


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1


_TASK: Callable[[], Any] | None = None
"""The worker's job, set just before the fork (closures cannot be pickled, forks inherit them)."""


def _run_task() -> Any:
    assert _TASK is not None
    return _TASK()


def frontier(strategies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the policy is on the cost-vs-SLO frontier: no baseline both cheaper and better on SLO."""
    p = strategies.get("policy")
    if p is None:
        return {}
    dominated_by = [
        n
        for n, s in strategies.items()
        if n != "policy"
        and s["cost"] <= p["cost"]
        and s["slo_attainment"] >= p["slo_attainment"]
        and (s["cost"] < p["cost"] or s["slo_attainment"] > p["slo_attainment"])
    ]
    return {"policy_on_frontier": not dominated_by, "dominated_by": dominated_by}
