"""How far the offline reference schedule and the LP bound are from the exact optimum.

    .venv/bin/python bench/reference_check.py [--json] [--only NAME ...] [--windows N]
        [--scale F] [--time-limit S] [--full]

`offline_ratio` and `cost_ratio` (bench/decision_quality.py) compare the policy with two
yardsticks: the greedy+MILP offline schedule (`broker.sim.offline`, `broker.sim.offline_milp`),
an upper bound on the cheapest on-time schedule, and the LP bound (`broker.sim.lower_bound`),
a lower one. This measures both against the optimum itself on reduced instances cut from a
scenario (same names as bench/decision_quality.py): the GPU jobs arriving in `--windows`
one-hour windows spread over the scenario, on-prem capacity scaled by `--scale` so the
partitions stay as contended, arrivals and runtimes rounded up to a 5-minute grid and runtimes
capped at 4 h (each job's costs scaled with its runtime; every method sees the same instance).
On a grid a time-indexed MILP (start slot per job and partition, or the cloud) is exact, and
HiGHS solves it within `--time-limit` (its status and gap are printed).

`--full` also re-decides every window of the whole scenario's offline schedule by the MILP
(not only the six dearest, as the simulator does to stay fast) and prints the policy's cost
against both schedules.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import decision_quality as dq  # noqa: E402

from broker.sim.backends import onprem_partitions  # noqa: E402
from broker.sim.engine import Engine  # noqa: E402
from broker.sim.expected import clairvoyant  # noqa: E402
from broker.sim.facts import JobFacts, all_facts  # noqa: E402
from broker.sim.jobs import SimJob  # noqa: E402
from broker.sim.lower_bound import LowerBound, _quiet_highs  # noqa: E402
from broker.sim.offline import offline_schedule, priced_schedule  # noqa: E402
from broker.sim.offline_milp import cheaper, improve  # noqa: E402
from broker.sim.payable import reference_facts  # noqa: E402
from broker.sim.strategies import PolicyStrategy  # noqa: E402

GRID_S = 300.0
MAX_RUNTIME_S = 4 * 3600.0
WINDOW_S = 3600.0

Instance = tuple[list[SimJob], list[JobFacts], dict[str, int]]


def reduced(jobs: Sequence[SimJob], facts: Sequence[JobFacts], capacity: dict[str, int],
            start_s: float, scale: float) -> Instance:
    """The GPU jobs arriving in [start_s, start_s + 1 h), on the grid, against scaled capacity."""
    gpu = {k: max(1, round(n * scale)) for k, n in capacity.items() if not k.endswith("/cpu")}
    out_jobs: list[SimJob] = []
    out_facts: list[JobFacts] = []
    for j, f in zip(jobs, facts, strict=True):
        onprem = {k: c for k, c in f.onprem.items() if k in gpu}
        if not (start_s <= j.arrival_s < start_s + WINDOW_S) or not onprem:
            continue
        arrival = math.ceil((j.arrival_s - start_s) / GRID_S) * GRID_S
        runtime = min(MAX_RUNTIME_S, math.ceil(j.runtime_s / GRID_S) * GRID_S)
        ratio = runtime / j.runtime_s if j.runtime_s > 0 else 1.0

        def scaled(c: float | None, ratio: float = ratio) -> float | None:
            return None if c is None else c * ratio

        out_jobs.append(dataclasses.replace(j, arrival_s=arrival, runtime_s=runtime))
        out_facts.append(dataclasses.replace(
            f, onprem={k: c * ratio for k, c in onprem.items()},
            cloud_cost=scaled(f.cloud_cost), cloud_floor=scaled(f.cloud_floor),
        ))
    return out_jobs, out_facts, gpu


def exact(inst: Instance, time_limit_s: float) -> dict[str, Any]:
    """The time-indexed MILP: each job in the cloud or at one grid slot of [arrival, deadline]."""
    import highspy

    jobs, facts, capacity = inst
    keys = sorted(capacity)
    slots = int(max(j.arrival_s + j.max_wait_s + j.runtime_s for j in jobs) // GRID_S) + 2
    cap_row = {k: n * slots for n, k in enumerate(keys)}
    lower = [-highspy.kHighsInf] * (len(keys) * slots)
    upper = [float(capacity[k]) for k in keys for _ in range(slots)]
    cost: list[float] = []
    start, index, value = [0], [], []

    def column(c: float, rows: list[tuple[int, float]]) -> None:
        cost.append(c)
        for r, v in rows:
            index.append(r)
            value.append(v)
        start.append(len(index))

    for j, f in zip(jobs, facts, strict=True):
        assign = len(lower)
        lower.append(1.0)
        upper.append(1.0)
        if f.cloud_cost is not None:  # at its expected cost, as the offline schedule pays it
            column(f.cloud_cost, [(assign, 1.0)])
        first, n_run = int(j.arrival_s // GRID_S), round(j.runtime_s / GRID_S)
        for k, c in f.onprem.items():
            if j.demand > capacity[k]:
                continue
            for s in range(first, first + int(j.max_wait_s // GRID_S) + 1):
                column(c, [(cap_row[k] + t, float(j.demand)) for t in range(s, s + n_run)] + [(assign, 1.0)])
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(cost), len(lower)
    lp.col_cost_ = np.array(cost)
    lp.col_lower_, lp.col_upper_ = np.zeros(len(cost)), np.ones(len(cost))
    lp.row_lower_, lp.row_upper_ = np.array(lower), np.array(upper)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.array(start, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(value)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * len(cost)
    h = _quiet_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.passModel(lp)
    started = time.perf_counter()
    h.run()
    info = h.getInfo()
    return {
        "optimum": round(float(info.objective_function_value), 2),
        "dual_bound": round(float(info.mip_dual_bound), 2),
        "status": h.modelStatusToString(h.getModelStatus()),
        "milp_s": round(time.perf_counter() - started, 1),
    }


def check_instance(inst: Instance, time_limit_s: float) -> dict[str, Any]:
    """LP bound, offline schedule and optimum of one reduced instance."""
    jobs, facts, capacity = inst
    lp = LowerBound(jobs, facts, capacity)  # as the simulator builds it
    bound = lp.solve(0) or 0.0
    prices = lp.capacity_prices()
    greedy = improve(jobs, facts, capacity, offline_schedule(jobs, facts, capacity))
    priced = priced_schedule(jobs, facts, capacity, prices) if prices is not None else greedy
    offline = cheaper(greedy, priced)
    opt = exact(inst, time_limit_s)
    best = opt["optimum"]
    return {
        "jobs": len(jobs), "capacity": capacity, "lp_bound": round(bound, 2),
        "greedy_milp": round(greedy.cost, 2), "priced": round(priced.cost, 2),
        "offline": round(offline.cost, 2), **opt,
        "greedy_milp_over_optimum": round(greedy.cost / best, 4),
        "offline_over_optimum": round(offline.cost / best, 4),
        "bound_over_optimum": round(bound / best, 4),
    }


def scenario(name: str, windows: int, scale: float, time_limit_s: float, full: bool) -> dict[str, Any]:
    """Every reduced instance of one scenario, and with `full` the whole-scenario comparison."""
    policy, scen, jobs, _ = dq.scenario_jobs(name, 0)
    refs = clairvoyant(jobs)
    facts = reference_facts(refs, jobs, all_facts(refs, policy), policy)
    capacity = {k: p.total for k, p in onprem_partitions(policy, scen.onprem_gpus).items()}
    last = max(j.arrival_s for j in refs)
    starts = [last * (n + 0.5) / windows - WINDOW_S / 2 for n in range(windows)]
    instances = [(s, reduced(refs, facts, capacity, max(0.0, s), scale)) for s in starts]
    out: dict[str, Any] = {
        "scenario": name,
        "instances": [{"from_s": round(s), **check_instance(inst, time_limit_s)} for s, inst in instances],
    }
    if full:
        run = Engine(policy, jobs, scen, PolicyStrategy(policy)).run()
        greedy = offline_schedule(refs, facts, capacity)
        t0 = time.perf_counter()
        default = improve(refs, facts, capacity, greedy)
        t1 = time.perf_counter()
        every = improve(refs, facts, capacity, greedy, windows=len(refs), window_jobs=150)
        t2 = time.perf_counter()
        cost = sum(r.cost for r in run.records)
        out["full"] = {
            "policy": round(cost, 2), "offline": round(default.cost, 2), "offline_s": round(t1 - t0, 1),
            "offline_every_window": round(every.cost, 2), "every_window_s": round(t2 - t1, 1),
            "offline_ratio": round(cost / default.cost, 4),
            "ratio_to_every_window": round(cost / every.cost, 4),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", nargs="*", default=["slice-late", "alibaba-peak"])
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.125, help="on-prem capacity of a reduced instance")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per exact MILP")
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    results = [scenario(n, args.windows, args.scale, args.time_limit, args.full) for n in args.only]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["scenario"])
        for i in r["instances"]:
            print(f"  from {i['from_s']:>6} s, {i['jobs']:>3} jobs: bound {i['lp_bound']:>9,.2f}  "
                  f"greedy+milp {i['greedy_milp']:>9,.2f}  priced {i['priced']:>9,.2f}  "
                  f"optimum {i['optimum']:>9,.2f} ({i['status']})  "
                  f"offline/opt {i['offline_over_optimum']:.3f}  "
                  f"bound/opt {i['bound_over_optimum']:.3f}")
        if "full" in r:
            f = r["full"]
            print(f"  whole: policy {f['policy']:,.2f}; offline {f['offline']:,.2f} "
                  f"({f['offline_ratio']:.3f}); every window re-decided {f['offline_every_window']:,.2f} "
                  f"({f['ratio_to_every_window']:.3f}, {f['every_window_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
