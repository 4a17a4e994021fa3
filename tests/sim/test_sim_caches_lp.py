"""The LP bound's model written column by column in row order equals the model as first built
(issue 15, speed): the same columns, rows, coefficients and bounds, so HiGHS solves the same LP.
The plain build (tuples per column, each column sorted, every span found per partition) is kept
here as it was."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from broker.policy import load_policy
from broker.sim.backends import onprem_partitions
from broker.sim.expected import clairvoyant
from broker.sim.facts import JobFacts, all_facts
from broker.sim.jobs import SimJob, build_jobs
from broker.sim.lower_bound import LowerBound, _edges
from broker.sim.scenario import load_scenario
from broker.sim.traces import read_trace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRACE = CONFIGS / "traces/alibaba-gpu-v2023-openb-pods.csv.gz"


class _PlainModel:
    def __init__(self, edges: list[float], keys: list[str], capacity: Mapping[str, int]) -> None:
        self.edges, self.nb = edges, len(edges) - 1
        nb = self.nb
        self.cap_row = {k: i * nb for i, k in enumerate(keys)}
        self.flow_row = {k: len(keys) * nb + i * nb for i, k in enumerate(keys)}
        self.late_row = 2 * len(keys) * nb
        self.n_rows = self.late_row + 1
        self.lower = [-math.inf] * (len(keys) * nb) + [0.0] * (len(keys) * nb) + [-math.inf]
        self.upper = [capacity[k] * (edges[b + 1] - edges[b]) for k in keys for b in range(nb)]
        self.upper += [0.0] * (len(keys) * nb) + [0.0]
        self.cost: list[float] = []
        self.hi: list[float] = []
        self.entries: list[list[tuple[int, float]]] = []
        for k in keys:
            for b in range(nb):
                self.add(0.0, math.inf, [(self.cap_row[k] + b, 1.0), (self.flow_row[k] + b, 1.0)])
                carry = [(self.flow_row[k] + b, 1.0)]
                if b + 1 < nb:
                    carry.append((self.flow_row[k] + b + 1, -1.0))
                self.add(0.0, math.inf, carry)

    def add(self, cost: float, hi: float, entries: list[tuple[int, float]]) -> None:
        self.cost.append(cost)
        self.hi.append(hi)
        self.entries.append(entries)

    def row(self, lo: float, hi: float) -> int:
        self.lower.append(lo)
        self.upper.append(hi)
        self.n_rows += 1
        return self.n_rows - 1

    def span(self, x: float, y: float) -> list[tuple[int, float]]:
        edges = self.edges
        out: list[tuple[int, float]] = []
        if y <= x:
            return out
        b = max(0, bisect.bisect_right(edges, x) - 1)
        while b < self.nb and edges[b] < y:
            ov = min(y, edges[b + 1]) - max(x, edges[b])
            if ov > 0:
                out.append((b, ov))
            b += 1
        return out

    def add_job(self, j: SimJob, f: JobFacts, capacity: Mapping[str, int]) -> None:
        a, r, w, d = j.arrival_s, j.runtime_s, j.max_wait_s, float(j.demand)
        assign = self.row(1.0, 1.0)
        self.add(0.0, 1.0, [(assign, 1.0), (self.late_row, 1.0)])
        if f.cloud_cost is not None:  # (priced at the floor, spot uninterrupted, since first built)
            self.add(f.cloud_cost if f.cloud_floor is None else f.cloud_floor, 1.0, [(assign, 1.0)])
        for k, cost in f.onprem.items():
            if k not in capacity:
                continue
            cap, flow = self.cap_row[k], self.flow_row[k]
            arrive = min(self.nb - 1, max(0, bisect.bisect_right(self.edges, a) - 1))
            self.add(cost, 1.0, [(assign, 1.0), (self.late_row, 1.0), (flow + arrive, -d * r)])
            flex = min(r, w)
            entries = [(assign, 1.0)] + [(cap + b, d * ov) for b, ov in self.span(a + w, a + r)]
            if flex > 0:
                frow = self.row(0.0, 0.0)
                entries.append((frow, -d * flex))
                windows = [(a, a + w + r)] if r <= w else [(a, a + w), (a + r, a + w + r)]
                for x, y in windows:
                    for b, ov in self.span(x, y):
                        self.add(0.0, d * ov, [(cap + b, 1.0), (frow, 1.0)])
            self.add(cost, 1.0, entries)

    def arrays(self) -> dict[str, Any]:
        start, index, value = [0], list[int](), list[float]()
        for entries in self.entries:
            for row, v in sorted(entries):
                index.append(row)
                value.append(v)
            start.append(len(index))
        return {
            "num_col": len(self.cost),
            "num_row": self.n_rows,
            "col_cost": np.array(self.cost),
            "col_lower": np.zeros(len(self.cost)),
            "col_upper": np.array(self.hi),
            "row_lower": np.array(self.lower),
            "row_upper": np.array(self.upper),
            "start": np.array(start),
            "index": np.array(index),
            "value": np.array(value),
        }


def _plain(jobs: Sequence[SimJob], facts: Sequence[JobFacts], capacity: Mapping[str, int]) -> dict[str, Any]:
    todo = [
        (j, f)
        for j, f in zip(jobs, facts, strict=True)
        if f.allowed and (f.cloud_cost is not None or any(k in capacity for k in f.onprem))
    ]
    model = _PlainModel(_edges([j for j, _ in todo], 100), sorted(capacity), capacity)
    for j, f in todo:
        model.add_job(j, f, capacity)
    return model.arrays()


def _built(bound: LowerBound) -> dict[str, Any]:
    assert bound._h is not None
    lp = bound._h.getLp()
    return {
        "num_col": lp.num_col_,
        "num_row": lp.num_row_,
        "col_cost": np.asarray(lp.col_cost_),
        "col_lower": np.asarray(lp.col_lower_),
        "col_upper": np.asarray(lp.col_upper_),
        "row_lower": np.asarray(lp.row_lower_),
        "row_upper": np.asarray(lp.row_upper_),
        "start": np.asarray(lp.a_matrix_.start_),
        "index": np.asarray(lp.a_matrix_.index_),
        "value": np.asarray(lp.a_matrix_.value_),
    }


@pytest.mark.parametrize("scenario_name", ["alibaba-peak", "alibaba-peak-estimates", "alibaba-gpuspec"])
def test_the_lp_written_in_row_order_equals_the_plain_build(scenario_name: str) -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / f"scenarios/{scenario_name}.yaml")
    trace, _ = read_trace(TRACE, max_runtime_s=scenario.max_runtime_s)
    rng = random.Random(scenario_name)
    start = rng.randrange(len(trace) - 600)
    jobs = clairvoyant(build_jobs(trace[start : start + 600], policy, scenario))
    # Some jobs with no wait at all (no flexible part) and some waiting longer than they run.
    waits = [0.0, 600.0, 7200.0, 86400.0]
    jobs = [replace(j, max_wait_s=rng.choice(waits)) if n % 3 == 0 else j for n, j in enumerate(jobs)]
    facts = all_facts(jobs, policy)
    capacity = {k: p.total for k, p in onprem_partitions(policy, scenario.onprem_gpus).items()}
    built, plain = _built(LowerBound(jobs, facts, capacity)), _plain(jobs, facts, capacity)
    assert plain["num_col"] > 2 * len(jobs) and plain["num_row"] > len(jobs)
    assert sum(1 for j in jobs if j.max_wait_s == 0) > 10
    assert built.keys() == plain.keys()
    for name, want in plain.items():
        assert np.array_equal(built[name], want), name
