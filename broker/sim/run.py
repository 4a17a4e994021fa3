"""One simulation: the policy under test, the baselines and the lower bound, into one result."""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from broker.policy import Policy
from broker.sim.audit import Auditor
from broker.sim.backends import onprem_partitions
from broker.sim.baselines import BASELINES, Baseline
from broker.sim.budgets import CashRow, Purse, cash_rows
from broker.sim.collector import fewer_collections
from broker.sim.engine import Engine
from broker.sim.expected import clairvoyant
from broker.sim.facts import JobFacts, all_facts
from broker.sim.fairness import tenant_summary
from broker.sim.jobs import SimJob
from broker.sim.lower_bound import LowerBound
from broker.sim.metrics import RunResult, outside_bound, summarize
from broker.sim.notes import below_bound, bound_note, offline_note
from broker.sim.offline import OfflineSchedule, offline_schedule, priced_schedule
from broker.sim.offline_milp import cheaper, improve
from broker.sim.payable import reference_facts
from broker.sim.refusals import refusal_counts
from broker.sim.scenario import Scenario
from broker.sim.state import Strategy
from broker.sim.strategies import PolicyStrategy

Progress = Callable[[str, int, int], None]
"""(phase, done, total)."""


@dataclass
class Simulation:
    result: dict[str, Any]
    runs: dict[str, RunResult] = field(default_factory=dict)


@dataclass
class _Others:
    """What runs beside the policy: baselines, the bound (at 0 and at each late count), its
    build+solve seconds, and the offline schedule."""

    done: dict[str, RunResult] = field(default_factory=dict)
    full: float | None = None
    solved: dict[tuple[int, int], float | None] = field(default_factory=dict)
    lb_s: float = 0.0
    offline: OfflineSchedule | None = None
    priced: OfflineSchedule | None = None
    """The offline schedule priced by the bound's capacity duals (made with the bound)."""
    left_out: frozenset[int] = frozenset()
    """Jobs the bound leaves out (no option can start them): late in every run, not in the LP."""
    offline_s: float = 0.0  # the greedy+MILP schedule's seconds
    milp_cut_short: int = 0  # and its MILP windows cut short (time or size)


@dataclass
class _World:
    policy: Policy
    jobs: Sequence[SimJob]
    scenario: Scenario
    baselines: Sequence[str]
    lower_bound: bool
    per_strategy_bounds: bool
    progress: Progress | None
    decided: Sequence[SimJob]
    """The jobs as submitted, for the policy; `jobs` has their actual runtimes as estimates."""
    paid: tuple[list[JobFacts], list[JobFacts]] | None = None  # (facts, `payable(facts)`) as last made

    def tick(self, phase: str) -> Callable[[int], None] | None:
        progress, n = self.progress, len(self.jobs)
        return None if progress is None else (lambda done: progress(phase, done, n))

    def policy_run(self) -> RunResult:
        strategy = PolicyStrategy(self.policy)
        engine = Engine(self.policy, self.decided, self.scenario, strategy, progress=self.tick("policy"))
        with fewer_collections():
            return engine.run()

    def baseline(self, name: str, facts: list[JobFacts], auditor: Auditor | None, report: bool) -> RunResult:
        strategy: Strategy = Baseline(name, self.policy, facts)  # type: ignore[arg-type]
        tick = self.tick(name) if report else None
        engine = Engine(self.policy, self.jobs, self.scenario, strategy, progress=tick, auditor=auditor)
        with fewer_collections():
            return engine.run()

    def capacity(self) -> dict[str, int]:
        return {k: p.total for k, p in onprem_partitions(self.policy, self.scenario.onprem_gpus).items()}

    def payable(self, facts: list[JobFacts]) -> list[JobFacts]:
        """The facts the references use: no cloud option for a job no budget can pay (made once)."""
        if self.paid is None or self.paid[0] is not facts:
            self.paid = (facts, reference_facts(self.jobs, self.decided, facts, self.policy))
        return self.paid[1]

    def offline(self, facts: list[JobFacts], beat: OfflineSchedule | None = None) -> OfflineSchedule:
        """The offline reference schedule: greedy, improved by the MILP windows, within budgets;
        the windows are left unsolved when they could not make it cheaper than `beat` (the
        schedule priced by the bound's duals, the reference then: `cheaper`)."""
        capacity, facts, purse = self.capacity(), self.payable(facts), Purse(self.policy)
        greedy = offline_schedule(self.jobs, facts, capacity, purse=purse)
        below = None if beat is None else beat.cost
        return improve(self.jobs, facts, capacity, greedy, purse=purse, beat=below)

    def references(self, facts: list[JobFacts], done: dict[str, RunResult]) -> _Others:
        """The LP bound, then the offline schedule (the reference if cheaper than the bound's
        priced one) and its seconds: one after the other, so the MILP knows what it must beat."""
        got = self.bound(facts, done)
        started = time.perf_counter()
        made = self.offline(facts, got.priced)
        got.offline = cheaper(made, got.priced)
        got.offline_s, got.milp_cut_short = time.perf_counter() - started, made.milp_cut_short
        return got

    def cash(self, facts: list[JobFacts]) -> list[CashRow]:
        """The bound's budget rows (a job that may run spot where the world interrupts it: none)."""
        risks = {str(s): b.spot_interruption_risk for s, b in self.policy.burst.sites.items()}

        def interrupted(site: str) -> bool:  # (a site with no burst settings: the engine's 0.05)
            return self.scenario.interruptions_for(site, risks.get(site, 0.05)) > 0

        return cash_rows(self.jobs, facts, self.policy, interrupted)

    def bound(self, facts: list[JobFacts], done: dict[str, RunResult]) -> _Others:
        """The LP bound (at each baseline's late count if asked)."""
        capacity, payable = self.capacity(), self.payable(facts)
        lb_started = time.perf_counter()
        bound = LowerBound(self.jobs, payable, capacity, cash=self.cash(payable))
        solved: dict[tuple[int, int], float | None] = {(0, 0): bound.solve(0)}
        lb_s = time.perf_counter() - lb_started
        prices = bound.capacity_prices()  # of the all-on-time LP, before another late count's solve
        purse = Purse(self.policy)  # (its own: the greedy's is another schedule's spend)
        priced = priced_schedule(self.jobs, payable, capacity, prices, purse=purse) if prices else None
        if self.per_strategy_bounds:  # (another LP: the all-on-time one's duals price the offline schedule)
            own = LowerBound(self.jobs, payable, capacity, cash=self.cash(payable), lateness=True)
            for run in done.values():
                n = _late_count(run, bound.left_out)
                if n not in solved:
                    solved[n] = own.solve(*n)
            global _BOUND
            _BOUND = own
        return _Others(done, solved[0, 0], solved, lb_s, priced=priced, left_out=bound.left_out)

    def others(self) -> _Others:
        """Facts, baselines and the bound, one after the other (with progress)."""
        if not (self.baselines or self.lower_bound) or not self.jobs:
            return _Others()
        if self.progress is not None:
            self.progress("placement facts", 0, len(self.jobs))
        with fewer_collections():
            facts = all_facts(self.jobs, self.policy)
        auditor = Auditor(self.policy, _audit_every(self.scenario, self.jobs))
        done = {name: self.baseline(name, facts, auditor, True) for name in self.baselines}
        if not self.lower_bound:
            return _Others(done)
        return self.references(facts, done)


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

    With `parallel`, a forked worker computes the facts and runs each baseline and the bound
    in processes of its own, beside the policy run in this process.
    """
    started = time.perf_counter()
    refs = clairvoyant(jobs)  # the baselines, offline schedule and bound see the actual runtimes
    world = _World(policy, refs, scenario, baselines, lower_bound, per_strategy_bounds, progress, jobs)
    if parallel and not per_strategy_bounds and (baselines or lower_bound) and jobs and _can_fork():
        global _TASK, _SLOTS
        ctx = multiprocessing.get_context("fork")
        # One side task at a time while the policy run holds a core (three busy processes on two
        # cores would slow the policy run, the longest single piece, by a third), all after it.
        beside = _side_slots(os.cpu_count() or 1)
        _SLOTS = slots = ctx.Semaphore(beside)
        _TASK = lambda: _others_in_parallel(world)  # noqa: E731  (inherited by the forked worker)
        try:  # a raise (the policy run, a progress callback) leaves no slots for a later run
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                future = pool.submit(_run_task)
                policy_run = world.policy_run()
                for _ in range(SIDE_WORKERS - beside):
                    slots.release()
                if progress is not None:
                    progress("baselines, bound", 0, 1)
                with fewer_collections():  # ~25k objects unpickled beside this process's large heap
                    others: _Others = future.result()
        finally:
            _SLOTS = _TASK = None
    else:
        policy_run = world.policy_run()
        others = world.others()
    runs = {"policy": policy_run, **others.done}
    out = _result(world, runs, others)
    out["sim_wall_s"] = round(time.perf_counter() - started, 2)
    return Simulation(out, runs)


def references(
    policy: Policy, jobs: Sequence[SimJob], scenario: Scenario
) -> tuple[OfflineSchedule | None, float | None, list[JobFacts]]:
    """The offline reference schedule and the all-on-time LP bound exactly as `simulate` reports
    them (within the tenants' budgets), with the facts they priced, in this process and without a
    policy run: for a bench that runs the policy its own way."""
    world = _World(policy, clairvoyant(jobs), scenario, (), True, False, None, jobs)
    facts = all_facts(world.jobs, policy)
    got = world.bound(facts, {})
    return cheaper(world.offline(facts, got.priced), got.priced), got.full, world.payable(facts)


def _others_in_parallel(world: _World) -> _Others:
    """In the forked worker: facts once, then each baseline and the references (the LP bound,
    then the offline schedule) as tasks of a pool of two processes, the longest first
    (`_LONGEST_FIRST`)."""
    with fewer_collections():
        facts = all_facts(world.jobs, world.policy)
    global _NAMED
    _NAMED = {name: partial(world.baseline, name, facts, None, False) for name in world.baselines}
    if world.lower_bound:  # set before the pool forks its workers
        world.payable(facts)  # (once, for both)
        _NAMED["references"] = partial(world.references, facts, {})
    order = sorted(
        _NAMED, key=lambda n: (_LONGEST_FIRST.index(n) if n in _LONGEST_FIRST else len(_LONGEST_FIRST), n)
    )
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=SIDE_WORKERS, mp_context=ctx) as pool:
        futures = {name: pool.submit(_run_named, name) for name in order}
        results = {name: f.result() for name, f in futures.items()}
    got: _Others = results.pop("references", _Others())
    got.done = {name: results[name] for name in world.baselines}
    return got


_LONGEST_FIRST = ("references", "onprem-only", "cloud-cheapest", "cheapest-offer")
"""The parallel tasks, longest first on the 8k trace, so the two workers end together."""


def _result(world: _World, runs: dict[str, RunResult], others: _Others) -> dict[str, Any]:
    """The JSON result: every strategy's summary, the bound and ratios, the offline schedule."""
    strategies = {name: summarize(run) for name, run in runs.items()}
    strategies["policy"].update(tenant_summary(runs["policy"], world.policy))
    learned = runs["policy"].runtime_ratios  # what its projections stretched estimates by
    strategies["policy"]["runtime_ratios"] = {t: round(r, 3) for t, r in learned.items()}
    strategies["policy"]["refusals"] = refusal_counts(world.decided, runs["policy"], world.policy)
    out: dict[str, Any] = {"strategies": strategies, "lower_bound_cost": None, "cost_ratio": None}
    if world.lower_bound and world.jobs:
        _bound_rows(world, runs, others, strategies, out)
    offline = others.offline
    if offline is not None:
        # The feasible clairvoyant schedule: the yardstick at the peaks, where the LP is loose.
        policy_cost = _cost(runs["policy"])
        out["offline_cost"] = round(offline.cost, 2)
        out["offline_ratio"] = round(policy_cost / offline.cost, 4) if offline.cost else None
        out["offline"] = {
            "onprem_jobs": offline.onprem_jobs,
            "cloud_jobs": offline.cloud_jobs,
            "late_jobs": offline.late_jobs,
            "unplaced": offline.unplaced,
            "method": offline.method,
            "milp_cut_short": others.milp_cut_short,
        }
        out["offline_s"] = round(others.offline_s, 2)
        if note := offline_note(strategies["policy"], offline.late_jobs, out["offline_ratio"]):
            out["offline_ratio_note"] = note
    out["frontier"] = frontier(strategies)
    return out


def _bound_rows(
    world: _World,
    runs: dict[str, RunResult],
    others: _Others,
    strategies: dict[str, dict[str, Any]],
    out: dict[str, Any],
) -> None:
    """Each strategy's bound (as many late jobs as it had) and ratio; the all-on-time bound."""
    solved, full = others.solved, others.full
    n_policy = _late_count(runs["policy"], others.left_out)
    if world.per_strategy_bounds and n_policy not in solved and _BOUND is not None:
        again = time.perf_counter()
        solved[n_policy] = _BOUND.solve(*n_policy)
        others.lb_s += time.perf_counter() - again
    for name, run in runs.items():
        n_late = _late_count(run, others.left_out)
        lb = solved.get(n_late)
        strategies[name]["late_jobs_allowed_in_bound"] = n_late[0]
        strategies[name]["lower_bound_cost"] = None if lb is None else round(lb, 2)
        strategies[name]["cost_ratio"] = round(_cost(run) / lb, 4) if lb else None
    out["lower_bound_cost"] = None if full is None else round(full, 2)
    out["cost_ratio"] = round(_cost(runs["policy"]) / full, 4) if full else None
    if note := bound_note(full is None, len(others.left_out), world.per_strategy_bounds):
        out["lower_bound_note"] = note  # (null, or jobs it leaves out: said as the table says the first)
    if out["cost_ratio"] is not None and out["cost_ratio"] < 1:  # said, as the bench says it
        out["cost_ratio_note"] = below_bound(strategies["policy"], n_policy[0], world.per_strategy_bounds)
    if strategies["policy"]["lower_bound_cost"] is None and full:
        # Its own bound (as many late jobs as it had) was not solved: the policy's row shows
        # its ratio to the all-on-time bound instead of nothing (a bound with no late jobs).
        # A solved one of 0 (each job it left late may go unrun) stays: it has no ratio.
        own = {"lower_bound_cost": out["lower_bound_cost"], "cost_ratio": out["cost_ratio"]}
        strategies["policy"].update(own, late_jobs_allowed_in_bound=0)
    out["lower_bound_s"] = round(others.lb_s, 2)


def _cost(run: RunResult) -> float:
    """A run's cost unrounded (the summary's is rounded to the cent: a ratio of it to an
    unrounded bound put a policy that matched the bound, 0.772 CNY, at 0.9974)."""
    return sum(r.cost for r in run.records if not r.rejected)


def _audit_every(scenario: Scenario, jobs: Sequence[SimJob]) -> int:
    return scenario.audit_every or (1 if len(jobs) <= 20_000 else 10)


_BOUND: LowerBound | None = None
"""The last bound built in this process (re-solved for the policy's late count)."""


def _late_count(run: RunResult, left_out: frozenset[int] = frozenset()) -> tuple[int, int]:
    """(late, never) of the run for its own bound: its jobs that were not one on-time run
    (`outside_bound`: started late or never, refused, finished late on-prem, stopped and run
    again), and those of them it never ran; but for those the bound leaves out (they can start
    nowhere, so counting them would allow the LP as many more late jobs). A job the strategy
    refused costs it nothing: its bound must let it go unstarted too."""
    records = [r for i, r in enumerate(run.records) if i not in left_out]
    never = sum(1 for r in records if r.rejected or math.isnan(r.start_s))
    return sum(1 for r in records if r.rejected or outside_bound(r)), never


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1


_TASK: Callable[[], Any] | None = None
"""The worker's job, set just before the fork (closures cannot be pickled, forks inherit them)."""


def _run_task() -> Any:
    assert _TASK is not None
    return _TASK()


_NAMED: dict[str, Callable[[], Any]] = {}
"""The nested workers' jobs by name (set before their fork, like `_TASK`)."""


def _run_named(name: str) -> Any:
    with _SLOTS or nullcontext(), fewer_collections():  # wait for a free core (see `simulate`)
        return _NAMED[name]()


SIDE_WORKERS = 2
"""Processes running the side tasks (baselines, offline schedule, bound)."""

_SLOTS: Any = None
"""How many side tasks may run at once (a semaphore shared with the forked workers): one fewer
than the cores while the policy run goes on, `SIDE_WORKERS` after it."""


def _side_slots(cores: int) -> int:
    """Side tasks let run beside the policy run: every core but the policy run's."""
    return max(1, min(SIDE_WORKERS, cores - 1))


def frontier(strategies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the policy is on the cost-vs-SLO frontier: no baseline both cheaper and better on SLO."""
    p = strategies.get("policy")
    if p is None:
        return {}
    if p["slo_attainment"] is None:  # the policy admitted no job: nothing to stand on a frontier
        return {"policy_on_frontier": None, "dominated_by": []}
    dominated_by = [
        n
        for n, s in strategies.items()
        if n != "policy"
        and s["slo_attainment"] is not None
        and s["cost"] <= p["cost"]
        and s["slo_attainment"] >= p["slo_attainment"]
        and (s["cost"] < p["cost"] or s["slo_attainment"] > p["slo_attainment"])
    ]
    return {"policy_on_frontier": not dominated_by, "dominated_by": dominated_by}
