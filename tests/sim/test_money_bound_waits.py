"""A job whose cloud offers only money refuses (its tenant's budget spent for the month) is not
re-decided every 2 h for the rest of the simulated time: its backoff runs to the next budget
month, when it bursts. An overloaded made-up v2026 job list under `alibaba-peak`, its budgets
spent early, re-decided such jobs ~12 times a day: 150k decisions on 2,000 jobs, 97% of them
these, and 4,000 jobs took 134 s (now 18k decisions, 9 s; 24 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import load_policy
from broker.sim.baselines import Baseline
from broker.sim.engine import Engine
from broker.sim.facts import all_facts
from broker.sim.jobs import EPOCH, build_jobs
from broker.sim.scenario import Scenario
from broker.sim.state import Strategy
from broker.sim.strategies import PolicyStrategy
from broker.sim.traces import TraceJob
from tests.sim.conftest import tiny_policy

APRIL_S = 31 * 86400.0  # EPOCH is 1 March (Beijing): the next budget month starts 31 days in


@pytest.mark.parametrize("strategy", ["policy", "cloud-cheapest", "cheapest-offer"])
def test_a_job_the_budget_refuses_bursts_when_the_month_turns(
    tmp_path: Path, scenario: Scenario, strategy: str
) -> None:
    tiny_policy(tmp_path)
    path = tmp_path / "policy.yaml"
    path.write_text(path.read_text().replace("monthly_budget: 100000", "monthly_budget: 150"))
    policy = load_policy(path)
    # Two GPUs fit no on-prem node (one GPU): each job can only burst, at 20 CNY/h for 5 h.
    trace = [TraceJob(f"j{i}", 3600.0 * i, 5 * 3600.0, count=2, tenant="t1") for i in range(2)]
    jobs = build_jobs(trace, policy, scenario)
    assert EPOCH.day == 1 and EPOCH.month == 3
    chosen: Strategy = (
        PolicyStrategy(policy) if strategy == "policy"
        else Baseline(strategy, policy, all_facts(jobs, policy))  # type: ignore[arg-type]
    )  # fmt: skip
    run = Engine(policy, jobs, scenario, chosen).run()
    first, second = run.records
    assert first.start_s < 3600  # 100 of the 150 CNY
    assert APRIL_S <= second.start_s <= APRIL_S + 300  # 100 > 50 left, until April (60 s boot)
    assert second.decisions <= 40  # (every 2 h for 31 days: ~370; the baselines' 2 h cap too)
    assert second.cash > 0 and first.cash > 0


@pytest.mark.parametrize("strategy", ["cloud-cheapest", "cheapest-offer", "onprem-only"])
def test_bursts_decided_in_one_pass_stay_within_the_budget(
    tmp_path: Path, scenario: Scenario, strategy: str
) -> None:
    """The baselines read a tenant's money once per pass: three 100 CNY bursts submitted together
    all passed a 150 CNY budget (a held-out run counted 3 budget violations per baseline)."""
    tiny_policy(tmp_path)
    path = tmp_path / "policy.yaml"
    path.write_text(path.read_text().replace("monthly_budget: 100000", "monthly_budget: 150"))
    policy = load_policy(path)
    trace = [TraceJob(f"j{i}", 0.0, 5 * 3600.0, count=2, tenant="t1") for i in range(3)]
    jobs = build_jobs(trace, policy, scenario)
    engine = Engine(policy, jobs, scenario, Baseline(strategy, policy, all_facts(jobs, policy)))  # type: ignore[arg-type]
    run = engine.run()
    assert run.budget_violations == 0
    starts = sorted(r.start_s for r in run.records)
    assert starts[0] < 3600 and starts[1] >= APRIL_S  # one in March, the next with April's budget
