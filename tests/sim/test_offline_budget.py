"""The offline schedule's MILP windows share a time budget, and a week-long wait stays a small MILP.

Review: on a 120-job trace with waits of a day or a week and runtimes of days, one window's MILP
had 6.3 M nonzeros; HiGHS's presolve, which its time limit does not stop, ran 43-100 s and found
nothing, so `szb simulate` took ~60 s (1.1 s without the references) for the greedy schedule.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from broker.cli import main
from broker.sim.facts import JobFacts
from broker.sim.jobs import SimJob
from broker.sim.offline import offline_schedule
from broker.sim.offline_milp import MAX_STARTS, _candidates, check, improve
from tests.sim.test_offline_milp import sim_job

ROOT = Path(__file__).resolve().parents[2]
TRACE = Path(__file__).parent / "data" / "long-waits-120.csv"  # (/tmp/rev58-scratch/sim/v11.csv)


def random_world(n: int) -> tuple[list[SimJob], list[JobFacts], dict[str, int]]:
    rng = random.Random(5)
    jobs, facts = [], []
    for i in range(n):
        jobs.append(sim_job(i, i * 300.0, rng.choice([1800, 3600, 7200]), rng.choice([1, 2]), 3600))
        facts.append(JobFacts((), {"p": rng.uniform(1, 10)}, rng.uniform(12, 40), {}))
    return jobs, facts, {"p": 4}


def test_a_spent_budget_keeps_the_greedy_schedule() -> None:
    jobs, facts, capacity = random_world(120)
    greedy = offline_schedule(jobs, facts, capacity)
    assert improve(jobs, facts, capacity, greedy, window_jobs=30).cost < greedy.cost  # (the MILP helps)
    out = improve(jobs, facts, capacity, greedy, window_jobs=30, budget_s=0.0)
    assert (out.cost, out.placements, out.method) == (greedy.cost, greedy.placements, "greedy")
    assert out.milp_cut_short == 4  # every window, none solved
    assert check(jobs, facts, capacity, out) == []


def test_a_week_long_wait_is_tried_at_a_few_starts() -> None:
    # Every 10 min over a week was 1,009 options of a job, each in every capacity row it spans.
    jobs = [sim_job(0, 0.0, 3 * 86400, 1, 7 * 86400)]
    facts = [JobFacts((), {"p": 1.0}, 50.0, {})]
    used = {"p": np.zeros(12 * 1440, dtype=np.int64)}  # 12 days of 60 s buckets, none held
    starts = sorted(s for _, _, s in _candidates(jobs, facts, {"p": 2}, [0], {}, used, 600.0))
    assert len(starts) == MAX_STARTS + 1
    assert (starts[0], starts[-1]) == (0.0, 7 * 86400)


def test_long_waits_are_re_decided_within_the_budget(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--trace", str(TRACE), "--policy", str(ROOT / "configs" / "policy-sim.yaml")]
    argv += ["--scenario", str(ROOT / "configs" / "scenarios" / "alibaba-peak.yaml"), "--onprem-gpus", "48"]
    assert main([*argv, "--baselines", "none", "-o", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["offline"]["method"] == "greedy+milp"  # (before: "greedy", both windows timed out)
    assert body["offline"]["milp_cut_short"] == 0
    assert body["offline_cost"] < 182_070.80  # the greedy's
    assert isinstance(body["offline_s"], float) and isinstance(body["lower_bound_s"], float)
