"""`burst.preempt_patient` in the simulator (issue 15): a job about to burst takes the units of a
patient job that started before it arrived; the patient job loses its work so far and runs again
later. Asserts where each job ran, what it cost and when, not timings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.policy import Policy, load_policy
from broker.sim.jobs import build_jobs
from broker.sim.metrics import JobRecord, RunResult, Series, finished_late, late, summarize
from broker.sim.run import simulate
from broker.sim.scenario import Delay, RuntimeEstimates, Scenario
from broker.sim.traces import TraceJob
from tests.brokerproc import ROOT
from tests.sim.conftest import CATALOG, CONFIGS, POLICY, table_row

HOUR = 3600.0
DAYS = 72 * HOUR


def policy_with(folder: Path, preempt: str, gpus: int = 1) -> Policy:
    """`gpus` A800s at 2 CNY/h on-prem, the cloud's at 10 CNY/h; projected waits."""
    (folder / "cloud.csv").write_text(CATALOG)
    text = POLICY.format(configs=CONFIGS, gpus=gpus).replace(
        "  hysteresis: 0s\n", f"  hysteresis: 0s\n  wait_model: projected\n  preempt_patient: {preempt}\n"
    )
    (folder / "policy.yaml").write_text(text)
    return load_policy(folder / "policy.yaml")


def a800(name: str, at: float, runtime: float, max_wait: float | None = None) -> TraceJob:
    return TraceJob(name, at, runtime, count=1, accelerators=("A800",), tenant="t1", max_wait_s=max_wait)


def run(
    folder: Path, preempt: str, trace: list[TraceJob], estimates: RuntimeEstimates | None = None
) -> RunResult:
    """The policy's run: instances up in a minute, users' estimates as `estimates` says (None: exact)."""
    policy = policy_with(folder, preempt)
    minute = Delay(min_s=60, mode_s=60, max_s=60)
    scenario = Scenario(seed=1, provisioning=minute, runtime_estimates=estimates)
    sim = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=(), lower_bound=False)
    return sim.runs["policy"]


def test_an_urgent_job_takes_the_units_of_a_patient_one_instead_of_bursting(tmp_path: Path) -> None:
    # P (may wait 4 h) runs 2 h on the only GPU from t=0. U (30 min) comes at 5 min: its start
    # is projected at 2 h, so it would burst for 10 CNY against 2 at home. Instead P is stopped
    # (~30 min of work lost, ~1 CNY, under a quarter of the 8 CNY premium) and U runs at home;
    # P runs again, in full, once U is done, its first start on time.
    p, u = run(tmp_path, "{enabled: true}", [a800("p", 0, 2 * HOUR, 4 * HOUR), a800("u", 300, HOUR)]).records
    assert not u.burst and u.cost_cloud == 0 and not late(u)
    assert p.preempted == 1 and not p.burst and not late(p)
    lost_h = u.start_s / HOUR  # P ran from 0 until U took its GPU
    assert 0.4 < lost_h < 0.55  # U waited for its last responsible moment (deadline - 5 min p95)
    assert p.cost == pytest.approx(2.0 * (2 + lost_h))  # its lost run, then all of it again
    assert u.cost == pytest.approx(2.0)
    assert p.end_s == pytest.approx(u.end_s + 2 * HOUR, abs=120)  # it ran again right after U
    assert not finished_late(p)  # by 3.6 h, well before 4 h + 2 h


def test_with_the_knob_off_the_urgent_job_bursts(tmp_path: Path) -> None:
    p, u = run(tmp_path, "{enabled: false}", [a800("p", 0, 2 * HOUR, 4 * HOUR), a800("u", 300, HOUR)]).records
    assert u.burst and u.cost_cloud == pytest.approx(10.0)
    assert p.preempted == 0 and p.cost == pytest.approx(4.0) and p.end_s == pytest.approx(2 * HOUR)


@pytest.mark.parametrize(
    ("preempt", "patient_wait"),
    [
        ("{enabled: true}", 1 * HOUR),  # P may wait only an hour: not patient enough (2 h)
        ("{enabled: true, max_lost_share: 0.05}", 4 * HOUR),  # ~1 CNY lost > 5% of 8 CNY
    ],
)
def test_the_burst_stands_when_the_patient_job_does_not_qualify(
    tmp_path: Path, preempt: str, patient_wait: float
) -> None:
    p, u = run(tmp_path, preempt, [a800("p", 0, 2 * HOUR, patient_wait), a800("u", 300, HOUR)]).records
    assert u.burst and p.preempted == 0


@pytest.mark.parametrize(("min_slack", "stopped"), [("3h", True), ("4h", False)])
def test_min_slack_keeps_a_job_near_its_own_deadline_running(
    tmp_path: Path, min_slack: str, stopped: bool
) -> None:
    # U would take P's GPU at ~0.5 h, when P's own start deadline (4 h) is ~3.5 h away.
    trace = [a800("p", 0, 2 * HOUR, 4 * HOUR), a800("u", 300, HOUR)]
    p, u = run(tmp_path, f"{{enabled: true, min_slack: {min_slack}}}", trace).records
    assert p.preempted == int(stopped) and u.burst != stopped


def test_a_job_stopped_and_started_again_late_finished_late() -> None:
    """`late` reads the first start; `finished_late` the end against arrival + max_wait + runtime,
    so the cost of a stop (or of a spot interruption) to the job stopped is counted."""
    on_time = JobRecord(arrival_s=0, max_wait_s=4 * HOUR, runtime_s=2 * HOUR, start_s=0, end_s=3.5 * HOUR)
    stopped = JobRecord(arrival_s=0, max_wait_s=2 * HOUR, runtime_s=2 * HOUR, start_s=0, end_s=5 * HOUR)
    never = JobRecord(arrival_s=0, max_wait_s=HOUR, runtime_s=HOUR)
    assert [late(r) for r in (on_time, stopped, never)] == [False, False, True]
    assert [finished_late(r) for r in (on_time, stopped, never)] == [False, True, True]
    totals = summarize(RunResult("policy", [on_time, stopped, never], Series()))
    assert (totals["late_jobs"], totals["late_finish_jobs"]) == (1, 2)


def test_a_patient_job_is_stopped_once(tmp_path: Path) -> None:
    # After its first stop P runs again from ~1.5 h; V (30 min) comes at 2 h and would burst:
    # P has restarted once already (max_restarts 1), so V bursts.
    trace = [a800("p", 0, 2 * HOUR, 4 * HOUR), a800("u", 300, HOUR), a800("v", 2 * HOUR, HOUR)]
    p, u, v = run(tmp_path, "{enabled: true}", trace).records
    assert p.preempted == 1 and not u.burst and v.burst


def test_szb_simulate_says_how_many_jobs_it_stopped(tmp_path: Path) -> None:
    policy_with(tmp_path, "{enabled: true}")
    (tmp_path / "trace.csv").write_text(
        "name,submit_time,runtime,accelerator,count,tenant,max_wait\n"
        "p,0,2h,A800,1,t1,4h\n"
        "u,300,1h,A800,1,t1,30m\n"
    )
    out = subprocess.run(
        [
            sys.executable, "-m", "broker.cli", "simulate", "--trace", "trace.csv", "--policy", "policy.yaml",
            "--report", "rep",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    said = "policy: 1 job(s) stopped on-prem for a job that would have burst (burst.preempt_patient); "
    assert said + "0 job(s) in all finished after max_wait + runtime" in out.stdout, out.stdout
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert table_row(summary, "|", "policy")["finished late"] == "0", summary


def test_another_tenants_work_within_its_quota_is_not_stopped(tmp_path: Path) -> None:
    # P runs within t1's guaranteed quota of the GPU; t2's urgent job bursts rather than stop it.
    # t1's own urgent job may stop it (its own work, its own quota).
    share = "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000,\n"
    share += "     share: {quota: {onprem/gpu: 1}}}\n  - {id: t2, kind: university, entity_country: CN}\n"

    def records(tenant: str) -> list:  # type: ignore[type-arg]
        folder = tmp_path / tenant
        folder.mkdir()
        policy = policy_with(folder, "{enabled: true}")
        text = (folder / "policy.yaml").read_text()
        line = "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000}\n"
        (folder / "policy.yaml").write_text(text.replace(line, share))
        policy = load_policy(folder / "policy.yaml")
        scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
        urgent = TraceJob("u", 300, 2 * HOUR, count=1, accelerators=("A800",), tenant=tenant)  # premium 16
        jobs = build_jobs([a800("p", 0, 2 * HOUR, 4 * HOUR), urgent], policy, scenario)
        return simulate(policy, jobs, scenario, baselines=(), lower_bound=False).runs["policy"].records

    p, u = records("t2")
    assert u.burst and p.preempted == 0
    p, u = records("t1")
    assert not u.burst and p.preempted == 1


def test_a_stopped_job_is_learned_once_when_it_finishes(tmp_path: Path) -> None:
    # t1 estimates every job at half its runtime (ratio 2). P is stopped for U, then runs again:
    # two jobs finished, so two ratios of 2 are learned (2^(2/5) below `FEW` jobs); the stop is no
    # finish, and learning P's full runtime there had counted it twice (2^(3/5)). Live counts only
    # SUCCEEDED jobs, once each.
    trace = [a800("p", 0, 2 * HOUR, 4 * HOUR), a800("u", 300, 2 * HOUR)]
    got = run(tmp_path, "{enabled: true}", trace, RuntimeEstimates(default_bias=0.5))
    p, u = got.records
    assert p.preempted == 1 and not u.burst and p.end_s is not None and u.end_s is not None
    assert got.runtime_ratios["t1"] == pytest.approx(2 ** (2 / 5))


def test_another_tenants_work_straddling_its_quota_is_not_stopped(tmp_path: Path) -> None:
    # P (2 GPUs of 2) runs half within t1's quota of 1: stopping it for t2's urgent job took t1
    # below its own guarantee (it counted as borrowed, being the attempt that crossed the quota).
    # t2's job bursts instead; t1's own urgent job may still stop it.
    policy_with(tmp_path, "{enabled: true}", gpus=2)
    text = (tmp_path / "policy.yaml").read_text()
    line = "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000}\n"
    share = "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000,\n"
    share += "     share: {quota: {onprem/gpu: 1}}}\n  - {id: t2, kind: university, entity_country: CN}\n"
    assert line in text
    (tmp_path / "policy.yaml").write_text(text.replace(line, share))
    policy = load_policy(tmp_path / "policy.yaml")
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    patient = TraceJob("p", 0, 2 * HOUR, count=2, accelerators=("A800",), tenant="t1", max_wait_s=4 * HOUR)

    def records(tenant: str) -> list[JobRecord]:
        urgent = TraceJob("u", 300, 2 * HOUR, count=1, accelerators=("A800",), tenant=tenant)  # premium 16
        jobs = build_jobs([patient, urgent], policy, scenario)
        return simulate(policy, jobs, scenario, baselines=(), lower_bound=False).runs["policy"].records

    p, u = records("t2")
    assert u.burst and p.preempted == 0
    p, u = records("t1")
    assert not u.burst and p.preempted == 1


@pytest.mark.parametrize(
    ("early", "tenant", "stopped"),
    [("t2", "t2", False), ("t1", "t2", True), ("t2", "t1", True), ("t2", "t3", True)],
)
def test_a_tenant_far_over_its_share_does_not_stop_the_work_of_one_under_it(
    tmp_path: Path, early: str, tenant: str, stopped: bool
) -> None:
    # `early` ran all three GPUs for three days (its usage history nears the whole cluster). Then
    # t1's patient P takes one GPU and t2's impatient B the other two; U comes 5 min later and would
    # burst. With t2 early, t2 is over its share (1.5) and 4.5 times t1's ratio (P's tenant), past
    # `burst.firm_deadline_share_gap` (2): t2's U bursts rather than stop the work of a tenant fair
    # share owes (held-out review: 17 of 24 swaps took an under-share tenant's work for an
    # over-share one's). With t1 early t2 is under its share: its U stops P. t1's own U stops P, as
    # does t3's (no usage: it owes nobody).
    policy_with(tmp_path, "{enabled: true}", gpus=3)
    text = (tmp_path / "policy.yaml").read_text()
    line = "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000}\n"
    more = "".join(f"  - {{id: {t}, kind: university, entity_country: CN}}\n" for t in ("t2", "t3"))
    assert line in text
    (tmp_path / "policy.yaml").write_text(text.replace(line, line + more))
    policy = load_policy(tmp_path / "policy.yaml")
    assert policy.burst.firm_deadline_share_gap == 2
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    trace = [
        TraceJob("early", 0, DAYS - 120, count=3, accelerators=("A800",), tenant=early),
        a800("p", DAYS, 2 * HOUR, 4 * HOUR),
        TraceJob("b", DAYS, 4 * HOUR, count=2, accelerators=("A800",), tenant="t2"),
        TraceJob("u", DAYS + 300, 2 * HOUR, count=1, accelerators=("A800",), tenant=tenant),
    ]
    jobs = build_jobs(trace, policy, scenario)
    first, p, b, u = simulate(policy, jobs, scenario, baselines=(), lower_bound=False).runs["policy"].records
    assert not first.burst and not p.burst and not b.burst and b.preempted == 0
    assert p.preempted == int(stopped) and u.burst != stopped
