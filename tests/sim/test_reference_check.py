"""`bench/reference_check.py` measures the offline reference and the LP bound against the exact
optimum of a reduced instance (issue 15's yardsticks). On the hand-made instance of
tests/sim/test_offline_priced.py the optimum is known (40: urgent jobs first, patient ones
deferred): the reference reaches it, greedy + MILP is never below it, nor the bound above."""

from __future__ import annotations

from types import ModuleType

import pytest

from broker.sim.facts import JobFacts
from tests.sim.conftest import load_bench
from tests.sim.test_offline_priced import patient_and_urgent, sim_job


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("reference_check")


def test_the_exact_optimum_and_both_yardsticks_of_a_known_instance(bench: ModuleType) -> None:
    jobs, facts = patient_and_urgent()
    got = bench.check_instance((jobs, facts, {"p": 2}), 30.0)
    assert got["status"] == "Optimal" and got["optimum"] == pytest.approx(40.0)
    assert got["greedy_milp"] >= got["optimum"] and got["offline"] == pytest.approx(40.0)
    assert got["lp_bound"] <= got["optimum"] + 1e-6


def test_a_reduced_instance_keeps_the_window_on_the_grid_with_costs_scaled(bench: ModuleType) -> None:
    # Jobs at 100 s, 3,000 s (in the hour from 0) and 4,000 s (outside); a CPU-only job is left out.
    jobs = [sim_job(0, 100, 1000, 1, 1800), sim_job(1, 3000, 20000, 2, 0), sim_job(2, 4000, 600, 1, 0)]
    jobs.append(sim_job(3, 200, 600, 1, 0))
    facts = [JobFacts((), {"site/a": 10.0}, 50.0, {})] * 3 + [JobFacts((), {"site/cpu": 1.0}, 5.0, {})]
    got, got_facts, capacity = bench.reduced(jobs, facts, {"site/a": 16, "site/cpu": 64}, 0.0, 0.125)
    assert capacity == {"site/a": 2}
    assert [(j.index, j.arrival_s, j.runtime_s) for j in got] == [(0, 300.0, 1200.0), (1, 3000.0, 14400.0)]
    assert got_facts[0].onprem == {"site/a": pytest.approx(12.0)}
    assert got_facts[0].cloud_cost == pytest.approx(60.0)
    assert got_facts[1].onprem == {"site/a": pytest.approx(7.2)}  # capped at 4 h of its 20,000 s
