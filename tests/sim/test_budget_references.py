"""The references (the LP bound, the offline schedule) keep within tenants' monthly budgets: issue 7
review, cases C and M (each hand-computed; a tenant with a budget of 100 CNY a month)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.policy import Policy, load_policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CONFIGS, POLICY, tiny_policy

# An 8-GPU A800 instance at 80 CNY/h, 20 on spot; an 8-GPU H800 (not on-prem) at 30 on spot.
CATALOG = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone,Currency
gpu.a8,A800,8,128,1024,80.0,20.0,r1,r1-a,CNY
gpu.h8,H800,8,128,1024,240.0,30.0,r1,r1-a,CNY
"""


def _policy(folder: Path) -> Policy:
    """One on-prem node of 8 A800 (2 CNY per GPU-hour), spot never interrupted, t1's budget 100 CNY/month."""
    (folder / "cloud.csv").write_text(CATALOG)
    text = (
        POLICY.format(configs=CONFIGS, gpus=8)
        .replace("monthly_budget: 100000", "monthly_budget: 100")
        .replace("  hysteresis: 0s\n", "  hysteresis: 0s\n  sites: {cloud: {spot_interruption_risk: 0.0}}\n")
    )
    (folder / "policy.yaml").write_text(text)
    return load_policy(folder / "policy.yaml")


def _run(folder: Path, trace: list[TraceJob]) -> dict[str, Any]:
    policy = _policy(folder)
    scenario = Scenario(seed=3, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    jobs = build_jobs(trace, policy, scenario)
    sim = simulate(policy, jobs, scenario, baselines=("onprem-only", "cloud-cheapest", "cheapest-offer"),
                   per_strategy_bounds=True, parallel=False)
    for name, s in sim.result["strategies"].items():
        assert s["budget_violations"] == 0, (name, s)
        own = s["lower_bound_cost"]
        assert own is None or own <= s["cost"] + 1e-6, (name, s)
    return sim.result


def test_case_c_the_budget_pays_five_bursts_and_no_schedule_starts_all_seven_on_time(tmp_path: Path) -> None:
    # Seven 8-GPU 1 h jobs at t=0 (max_wait 30 min): the node runs one on time, 100 CNY pays five
    # spot bursts at 20; the seventh is late in every schedule. The bound priced six bursts (120
    # CNY against 100) and called it all on time; the offline schedule claimed 0 late jobs.
    trace = [TraceJob(f"c{i}", 0, 3600, count=8, accelerators=("A800",), tenant="t1") for i in range(7)]
    out = _run(tmp_path, trace)
    assert out["lower_bound_cost"] is None and out["cost_ratio"] is None
    assert "cost_ratio_note" not in out
    off = out["offline"]
    assert (off["cloud_jobs"], off["onprem_jobs"], off["late_jobs"]) == (5, 2, 1), off
    assert out["offline_cost"] == pytest.approx(100 + 2 * 16.0)  # five bursts, two node-hours at 16
    policy = out["strategies"]["policy"]
    assert policy["late_jobs"] == 1
    # Its own bound, one job late: five bursts (100), one on time on-prem (16) and the late one run
    # late on-prem (16): a job left late ran somewhere (it went unrun at 0 before: 116).
    assert policy["lower_bound_cost"] == pytest.approx(132.0, abs=0.01)
    assert out["offline_ratio"] >= 1 - 1e-9


def test_case_m_cloud_only_jobs_beyond_the_budget_wait_for_the_next_month(tmp_path: Path) -> None:
    # Three H800 jobs (no on-prem H800) of 2 h at 30 CNY/h spot, 60 CNY each: 100 CNY a month pays
    # one. The footer said "lower bound 180.00 CNY (every job on time)" and an offline schedule of
    # 180 with no late job: 80 CNY over the budget.
    trace = [TraceJob(f"m{i}", 0, 7200, count=8, accelerators=("H800",), tenant="t1") for i in range(3)]
    out = _run(tmp_path, trace)
    assert out["lower_bound_cost"] is None and out["cost_ratio"] is None
    off = out["offline"]
    # One burst this month, one the next, one the month after: each late but the first.
    assert (off["cloud_jobs"], off["late_jobs"], off["unplaced"]) == (3, 2, 0), off
    assert out["offline_cost"] == pytest.approx(180.0)
    policy = out["strategies"]["policy"]
    # Its own bound: the late ones burst in later months (they went unrun at 0 before): all three.
    assert policy["late_jobs"] == 2 and policy["lower_bound_cost"] == pytest.approx(180.0, abs=0.01), policy


job = st.tuples(
    st.integers(0, 6 * 3600), st.integers(60, 4 * 3600), st.integers(1, 2), st.sampled_from([0, 600])
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(job, min_size=1, max_size=8), budget=st.sampled_from([5, 15, 40]), seed=st.integers(0, 3))
def test_the_bound_stays_below_every_run_within_a_tight_budget(
    tmp_path_factory: Any, raw: list[tuple[int, int, int, int]], budget: int, seed: int
) -> None:
    # The random test of test_bound_and_determinism with budgets that bind: the budget rows must
    # keep the bound at or below every strategy's cost (at its own late count), and the offline
    # schedule within the budget (its cash is checked by the rows: with nobody late, >= bound).
    folder = tmp_path_factory.mktemp("tight")
    tiny_policy(folder, gpus=2)
    text = (folder / "policy.yaml").read_text().replace("monthly_budget: 100000", f"monthly_budget: {budget}")
    (folder / "policy.yaml").write_text(text)
    policy = load_policy(folder / "policy.yaml")
    trace = sorted(
        (TraceJob(f"j{i}", t, r, count=n, accelerators=("A800",), tenant="t1", max_wait_s=w)
         for i, (t, r, n, w) in enumerate(raw)),
        key=lambda j: (j.submit_s, j.name),
    )
    scenario = Scenario(seed=seed, onprem_gpus=1, provisioning=Delay(min_s=30, mode_s=90, max_s=300))
    out = simulate(policy, build_jobs(trace, policy, scenario), scenario, per_strategy_bounds=True).result
    lb = out["lower_bound_cost"]
    if lb is not None and out["offline"]["late_jobs"] == 0:
        assert out["offline_cost"] >= lb - 1e-6
    for name, s in out["strategies"].items():
        assert s["budget_violations"] == 0, (name, s)
        assert s["lower_bound_cost"] is None or s["lower_bound_cost"] <= s["cost"] + 1e-6, (name, s)
        if s["late_jobs"] == 0 and lb is not None:
            assert lb <= s["cost"] + 1e-6, (name, s)
