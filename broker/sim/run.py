"""One simulation: the policy under test, the baselines and the lower bound, into one result."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.policy import Policy
from broker.sim.backends import onprem_partitions
from broker.sim.baselines import BASELINES, Baseline
from broker.sim.engine import Engine, Strategy
from broker.sim.jobs import JobFacts, SimJob, all_facts
from broker.sim.lower_bound import LowerBound
from broker.sim.metrics import RunResult, late, summarize
from broker.sim.scenario import Scenario
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
    progress: Progress | None = None,
) -> Simulation:
    """Run every strategy on the same jobs and world, then bound the cost from below."""
    started = time.perf_counter()

    def tick(phase: str) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda done: progress(phase, done, len(jobs))

    runs: dict[str, RunResult] = {}
    runs["policy"] = Engine(policy, jobs, scenario, PolicyStrategy(policy), progress=tick("policy")).run()
    facts: list[JobFacts] | None = None
    if baselines or lower_bound:
        if progress is not None:
            progress("placement facts", 0, len(jobs))
        facts = all_facts(jobs, policy)
    for name in baselines:
        strategy: Strategy = Baseline(name, policy, facts or [])  # type: ignore[arg-type]
        runs[name] = Engine(policy, jobs, scenario, strategy, progress=tick(name)).run()
    strategies = {name: summarize(run) for name, run in runs.items()}
    out: dict[str, Any] = {"strategies": strategies, "lower_bound_cost": None, "cost_ratio": None}
    if lower_bound and facts is not None and jobs:
        if progress is not None:
            progress("lower bound", 0, 1)
        lb_started = time.perf_counter()
        bound = LowerBound(
            jobs, facts, {k: p.total for k, p in onprem_partitions(policy, scenario.onprem_gpus).items()}
        )
        full = bound.solve(0)
        solved: dict[int, float | None] = {0: full}
        for name, run in runs.items():
            n_late = sum(1 for r in run.records if not r.rejected and late(r))
            if n_late not in solved and per_strategy_bounds:
                solved[n_late] = bound.solve(n_late)
            lb = solved.get(n_late)
            strategies[name]["late_jobs_allowed_in_bound"] = n_late
            strategies[name]["lower_bound_cost"] = None if lb is None else round(lb, 2)
            strategies[name]["cost_ratio"] = round(strategies[name]["cost"] / lb, 4) if lb else None
        out["lower_bound_cost"] = None if full is None else round(full, 2)
        out["cost_ratio"] = round(strategies["policy"]["cost"] / full, 4) if full else None
        out["lower_bound_s"] = round(time.perf_counter() - lb_started, 2)
    out["frontier"] = frontier(strategies)
    out["sim_wall_s"] = round(time.perf_counter() - started, 2)
    return Simulation(out, runs)


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
