"""A job whose cloud offers only money refuses (its tenant's budget spent for the month) is not
re-decided every 2 h for the rest of the simulated time: its backoff runs to the next budget
month, when it bursts. An overloaded made-up v2026 job list under `alibaba-peak`, its budgets
spent early, re-decided such jobs ~12 times a day: 150k decisions on 2,000 jobs, 97% of them
these, and 4,000 jobs took 134 s (now 18k decisions, 9 s; 24 s)."""

from __future__ import annotations

from pathlib import Path

from broker.policy import load_policy
from broker.sim.engine import Engine
from broker.sim.jobs import EPOCH, build_jobs
from broker.sim.scenario import Scenario
from broker.sim.strategies import PolicyStrategy
from broker.sim.traces import TraceJob
from tests.sim.conftest import tiny_policy

APRIL_S = 31 * 86400.0  # EPOCH is 1 March (Beijing): the next budget month starts 31 days in


def test_a_job_the_budget_refuses_bursts_when_the_month_turns(tmp_path: Path, scenario: Scenario) -> None:
    tiny_policy(tmp_path)
    path = tmp_path / "policy.yaml"
    path.write_text(path.read_text().replace("monthly_budget: 100000", "monthly_budget: 150"))
    policy = load_policy(path)
    # Two GPUs fit no on-prem node (one GPU): each job can only burst, at 20 CNY/h for 5 h.
    trace = [TraceJob(f"j{i}", 3600.0 * i, 5 * 3600.0, count=2, tenant="t1") for i in range(2)]
    jobs = build_jobs(trace, policy, scenario)
    assert EPOCH.day == 1 and EPOCH.month == 3
    run = Engine(policy, jobs, scenario, PolicyStrategy(policy)).run()
    first, second = run.records
    assert first.start_s < 3600  # 100 of the 150 CNY
    assert APRIL_S <= second.start_s <= APRIL_S + 300  # 100 > 50 left, until April (60 s boot)
    assert second.decisions <= 40  # (every 2 h for 31 days: ~370)
    assert second.cash > 0 and first.cash > 0
