"""The simulator's voucher money: a balance spent once over the voucher's life, as the live broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import Policy, load_policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Delay, RuntimeEstimates, Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import tiny_policy

APRIL_S = 31 * 86400.0
"""Simulated time 0 is 2026-03-01 in Beijing: this is 2026-04-01."""


def voucher_policy(folder: Path, voucher: str) -> Policy:
    """The tiny world (one on-prem GPU, a 10 CNY/h cloud GPU) with t1 holding `voucher`."""
    tiny_policy(folder)
    path = folder / "policy.yaml"
    budget = "monthly_budget: 100000"
    path.write_text(path.read_text().replace(f"{budget}}}", f"{budget}, vouchers: [{voucher}]}}"))
    return load_policy(path)


def busy_then_burst(at_s: float, runtime_s: float = 3600) -> list[TraceJob]:
    """A takes the one on-prem GPU at `at_s`; B a minute later may not wait for it, so it bursts."""
    return [
        TraceJob(f"a{at_s:.0f}", at_s, 3600, count=1, accelerators=("A800",), tenant="t1"),
        TraceJob(f"b{at_s:.0f}", at_s + 60, runtime_s, count=1, accelerators=("A800",), tenant="t1"),
    ]


def test_a_voucher_used_up_in_march_pays_nothing_in_april(tmp_path: Path, scenario: Scenario) -> None:
    # March's burst (1 h at 10 CNY) draws the whole 5 CNY at half price; April's burst must not
    # draw it again: before, the ledger counted draws per month and paid 5 CNY more.
    policy = voucher_policy(tmp_path, "{id: v1, balance: 5, discount: 0.5, sites: [cloud]}")
    jobs = build_jobs([*busy_then_burst(0), *busy_then_burst(APRIL_S)], policy, scenario)
    sim = simulate(policy, jobs, scenario)
    p = sim.result["strategies"]["policy"]
    records = sorted(sim.runs["policy"].records, key=lambda r: r.start_s)
    assert [r.burst for r in records] == [False, True, False, True]
    assert [r.voucher for r in records if r.burst] == pytest.approx([5.0, 0.0])
    assert p["voucher"] == pytest.approx(5.0)
    assert p["cash"] == pytest.approx(5.0 + 10.0)


def test_a_run_past_its_estimate_draws_no_more_than_the_voucher_holds(tmp_path: Path) -> None:
    # B is estimated at half its 2 h: reserved 5 CNY of voucher for 10 CNY, it costs 20 CNY; the
    # voucher pays half of it only up to its 6 CNY balance, the rest is cash.
    policy = voucher_policy(tmp_path, "{id: v1, balance: 6, discount: 0.5, sites: [cloud]}")
    scenario = Scenario(
        seed=1,
        provisioning=Delay(min_s=60, mode_s=60, max_s=60),
        runtime_estimates=RuntimeEstimates(default_bias=0.5),
    )
    jobs = build_jobs(busy_then_burst(0, runtime_s=7200), policy, scenario)
    run = simulate(policy, jobs, scenario)
    burst = [r for r in run.runs["policy"].records if r.burst]
    assert len(burst) == 1
    assert burst[0].voucher == pytest.approx(6.0)
    assert run.result["strategies"]["policy"]["voucher"] == pytest.approx(6.0)


def test_a_voucher_pays_through_its_expiry_day_and_not_after(tmp_path: Path, scenario: Scenario) -> None:
    # It expires on 2026-03-31 (Beijing): March's burst draws on it, April's pays cash.
    policy = voucher_policy(tmp_path, "{id: v1, balance: 100, discount: 0.5, expires: 2026-03-31}")
    jobs = build_jobs([*busy_then_burst(0), *busy_then_burst(APRIL_S)], policy, scenario)
    records = sorted(simulate(policy, jobs, scenario).runs["policy"].records, key=lambda r: r.start_s)
    assert [r.voucher for r in records if r.burst] == pytest.approx([5.0, 0.0])


def test_a_run_across_its_expiry_is_paid_by_the_voucher_only_up_to_it(
    tmp_path: Path, scenario: Scenario
) -> None:
    # The late burst runs 2 h from about 23:00 on the voucher's last day (Beijing): the voucher pays
    # half the cost of its run up to midnight, the rest is cash (it paid half of all 2 h before).
    policy = voucher_policy(tmp_path, "{id: v1, balance: 100, discount: 0.5, expires: 2026-03-31}")
    trace = [*busy_then_burst(0), *busy_then_burst(APRIL_S - 3600 - 120, runtime_s=7200)]
    records = simulate(policy, build_jobs(trace, policy, scenario), scenario).runs["policy"].records
    [late] = [r for r in records if r.burst and r.start_s > APRIL_S / 2]
    before_h = (APRIL_S - late.start_s) / 3600  # the voucher's last hour or so
    assert 0 < before_h < 2
    assert late.voucher == pytest.approx(10.0 * before_h / 2)
    assert late.cash == pytest.approx(20.0 - late.voucher)
