"""The projected wait model in the simulator (issue 15, obs. 2): wait on-prem when running jobs
free capacity in time, burst at the last responsible moment when they do not, line up bursts
behind a route's launch limit, and project an over-share tenant's job behind the jobs of a
tenant further below its share. Asserts decisions and outcomes (on time or not), not timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.burst.projection import expected_end
from broker.policy import Policy, load_policy
from broker.sim.backends import Partition
from broker.sim.jobs import build_jobs
from broker.sim.metrics import late
from broker.sim.queues import ProjectedQueues
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CATALOG, CONFIGS, POLICY, load_bench, tiny_policy


def projected_policy(folder: Path, *, route: str = "") -> Policy:
    """One 1-GPU partition, one cloud route; projected waits, lateness at 8x the wait cost."""
    (folder / "cloud.csv").write_text(CATALOG)
    text = POLICY.format(configs=CONFIGS, gpus=1).replace(
        "  hysteresis: 0s\n", f"  hysteresis: 0s\n  wait_model: projected\n  late_wait_factor: 8\n{route}"
    )
    (folder / "policy.yaml").write_text(text)
    return load_policy(folder / "policy.yaml")


def a800(name: str, at: float, runtime: float) -> TraceJob:
    return TraceJob(name, at, runtime, count=1, accelerators=("A800",), tenant="t1")


@pytest.mark.parametrize(("running_s", "bursts"), [(1200.0, False), (7200.0, True)])
def test_waits_on_prem_when_a_running_job_ends_in_time_else_bursts(
    tmp_path: Path, running_s: float, bursts: bool
) -> None:
    # The only GPU runs A. B (max_wait 30 min) arrives a minute later: A ending after 20 min
    # starts B in time on-prem; A ending after 2 h makes B late, so B bursts (the cloud costs
    # less than 90 min of lateness), at its last responsible moment.
    policy = projected_policy(tmp_path)
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    jobs = build_jobs([a800("a", 0, running_s), a800("b", 60, 3600)], policy, scenario)
    sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False)
    b = sim.runs["policy"].records[1]
    assert b.burst is bursts
    assert not late(b)
    if bursts:  # it waited first: the burst was not decided on arrival
        assert b.decisions >= 2 and b.wait_s > 600


@pytest.mark.parametrize("c_at", [61.0, 60.0], ids=["a-second-apart", "same-instant"])
def test_two_late_jobs_behind_a_route_limit_of_one_are_not_both_late(tmp_path: Path, c_at: float) -> None:
    # The only GPU is busy for 2 h; B and C arrive together, both projected late. The route
    # brings one instance up at a time (4 min each, p95 5 min). Bursting both at deadline minus
    # 5 min would leave C queued behind B's launch past its deadline; C sees B's burst lined up
    # ahead of it on the route and moves its own last responsible moment one p95 earlier. Also
    # when both arrive at the same instant, so are due at the same moment (a batch submitted in
    # one call): counting only bursts due strictly sooner, neither saw the other ahead.
    route = "  sites:\n    cloud: {max_provisioning: 1, provisioning_p95: 5m}\n"
    policy = projected_policy(tmp_path, route=route)
    scenario = Scenario(seed=1, provisioning=Delay(min_s=240, mode_s=240, max_s=240))
    trace = [a800("a", 0, 7200), a800("b", 60, 3600), a800("c", c_at, 3600)]
    sim = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=(), lower_bound=False)
    b, c = sim.runs["policy"].records[1:]
    assert b.burst and c.burst
    assert not late(b) and not late(c)


def test_over_share_tenant_is_projected_behind_an_under_share_tenant() -> None:
    # 8 units all busy until t=1000. Tenant "big" (over its share) queued first with the
    # earlier deadline; tenant "small" (under its share) queued later. The dispatcher serves
    # "small" first, so "big"'s next job counts small's job as ahead of it, and not vice versa.
    part = Partition("p/x", 8, True, free=0, ends=[(1000.0, 8)])
    queues = ProjectedQueues({"p/x": part})
    queues.running.add("p/x", 0, (0.0, 1000.0, 0.0, 8, "other"))  # started at 0, estimate 1000 s
    queues.add("p/x", 1, (1, 100.0, 0.0, "b1"), 8, 5000.0, "big")
    queues.add("p/x", 2, (1, 900.0, 50.0, "s1"), 8, 3000.0, "small")
    key = (1, 950.0, 60.0, "b2")
    plain = queues.project(key, 8, 0.0, 1e9, accelerated=True)["p/x"]
    behind_small = queues.project(key, 8, 0.0, 1e9, accelerated=True, first=frozenset({"small"}))["p/x"]
    assert plain == 1000.0 + 5000.0 + 3000.0
    assert behind_small == plain  # small's job was keyed ahead already: nothing changes
    early = (1, 800.0, 60.0, "b2")  # keyed before small's job, but small's tenant goes first
    assert queues.project(early, 8, 0.0, 1e9, accelerated=True)["p/x"] == 6000.0
    assert queues.project(early, 8, 0.0, 1e9, accelerated=True, first=frozenset({"small"}))["p/x"] == 9000.0


def test_decision_quality_bench_applies_burst_overrides() -> None:
    # The README's fluid rows run `bench/decision_quality.py ... --burst wait_model=fluid
    # late_wait_factor=1`: the overrides reach the policy every scenario runs with.
    bench = load_bench("decision_quality")
    bench.BURST[:] = ["wait_model=fluid", "late_wait_factor=1"]
    knobs = bench.knobs()
    assert knobs["wait_model"] == "fluid" and knobs["late_wait_factor"] == 1.0
    assert knobs["wait_estimate_factor"] == 0.4  # the rest as configs/policy-sim.yaml has it
    bench.BURST[:] = []
    assert bench.knobs()["wait_model"] == "projected" and bench.knobs()["late_wait_factor"] == 1.5


@pytest.mark.parametrize(("gap", "bursts"), [(2.0, True), (0.0, False)])
def test_a_tenant_held_back_by_a_far_over_share_tenant_bursts_rather_than_be_late(
    tmp_path: Path, gap: float, bursts: bool
) -> None:
    # Tenant "big" holds both GPUs for 2,460 s; "small" (using nothing) queues a 10 h job a minute
    # in, projected to start 10 min past its 30-min max_wait. Ten minutes of lateness (4 x 40
    # CNY/h) costs less than the cloud's premium over on-prem for 10 h, so without a firm
    # deadline it waits and is late; with one (big's share ratio >= 2x small's) it bursts at
    # its last responsible moment and starts on time.
    (tmp_path / "cloud.csv").write_text(CATALOG)
    knobs = f"  wait_model: projected\n  late_wait_factor: 4\n  firm_deadline_share_gap: {gap}\n"
    text = POLICY.format(configs=CONFIGS, gpus=2).replace("  hysteresis: 0s\n", "  hysteresis: 0s\n" + knobs)
    text = text.replace(
        "tenants:\n",
        "tenants:\n  - {id: big, kind: university, entity_country: CN, monthly_budget: 100000}\n"
        "  - {id: small, kind: university, entity_country: CN, monthly_budget: 100000}\n",
    )
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    trace = [
        TraceJob("a", 0, 2460, count=1, accelerators=("A800",), tenant="big"),
        TraceJob("b", 0, 2460, count=1, accelerators=("A800",), tenant="big"),
        TraceJob("s", 60, 36000, count=1, accelerators=("A800",), tenant="small"),
    ]
    sim = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=(), lower_bound=False)
    s = sim.runs["policy"].records[2]
    assert s.burst is bursts
    assert late(s) is not bursts
    if bursts:  # it waited for its last responsible moment first
        assert s.decisions >= 2 and s.wait_s > 600


def test_waiting_tenants_follow_adds_moves_and_removes() -> None:
    parts = {"a": Partition("a", 8, True, free=8), "b": Partition("b", 8, True, free=8)}
    queues = ProjectedQueues(parts)
    queues.add("a", 1, (1, 10.0, 0.0, "j1"), 1, 60.0, "t1")
    queues.add("b", 2, (1, 20.0, 0.0, "j2"), 1, 60.0, "t2")
    queues.add("b", 1, (1, 10.0, 0.0, "j1"), 1, 60.0, "t1")  # the same job moves partition
    assert queues.tenants() == {"t1", "t2"}
    queues.remove(2)
    queues.remove(2)  # removing twice changes nothing
    assert queues.tenants() == {"t1"}
    queues.remove(1)
    assert queues.tenants() == set()


def test_a_job_behind_a_run_past_its_estimate_bursts_rather_than_wait_for_it(tmp_path: Path) -> None:
    # A's user estimated a tenth of its 3 h run. B arrives after A's expected end: projecting A to
    # end *now* gave B a wait of 0 s at every decision, so B waited on-prem for 2.5 h. As live
    # (`broker.dispatch.waits`), A is expected to run on for as long as it has overrun, so B is
    # projected late before its deadline and bursts.
    policy = projected_policy(tmp_path)
    scenario = Scenario(
        seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60), runtime_estimates={"default_bias": 0.1}
    )
    jobs = build_jobs([a800("a", 0, 3 * 3600), a800("b", 1800, 3600)], policy, scenario)
    sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False)
    b = sim.runs["policy"].records[1]
    assert b.burst
    assert not late(b), b


@pytest.mark.parametrize(
    ("now_s", "wait_s"), [(300.0, 300.0), (600.0, 60.0), (630.0, 60.0), (1800.0, 1200.0)]
)
def test_a_run_past_its_expected_end_runs_on_as_long_as_it_has_overrun(now_s: float, wait_s: float) -> None:
    # One unit, busy with a run started at 0 with a 600 s estimate. Before 600 s the job behind it
    # waits for the rest of the estimate; past it, as live (`expected_end`), for as long as the run
    # has overrun, a minute at least, never 0 s (the simulator took the run to end *now*).
    part = Partition("p/x", 1, True, free=0, ends=[(600.0, 1)])
    queues = ProjectedQueues({"p/x": part})
    queues.running.add("p/x", 0, (0.0, 600.0, 0.0, 1, "other"))
    got = queues.project((1, now_s + 1800, now_s, "b"), 1, now_s, 1e9, accelerated=True)["p/x"]
    assert got == pytest.approx(wait_s)
    assert got == pytest.approx(expected_end(600.0, now_s) - now_s)


def test_jobs_submitted_together_are_decided_in_dispatch_order(tmp_path: Path) -> None:
    # `make demo`'s peak: ten 1-GPU jobs submitted in one call on 4 GPUs, alternately impatient
    # (max_wait 1 min) and patient (1 day). The live dispatcher takes them in one pass in
    # deadline order: the impatient ones take the GPUs, only the fifth bursts. Decided one by
    # one in submission order, the simulator let two patient jobs take GPUs and burst three.
    policy = tiny_policy(tmp_path, gpus=4, wait_model="projected")
    trace = [
        TraceJob(f"p{i}", 0.0, 3600.0, count=1, accelerators=("A800",), tenant="t1",
                 max_wait_s=60.0 if i % 2 else 86400.0)
        for i in range(10)
    ]
    scenario = Scenario(seed=1)
    sim = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=(), lower_bound=False)
    records = sim.runs["policy"].records
    impatient, patient = records[1::2], records[0::2]
    assert [r.burst for r in impatient].count(True) == 1
    assert not any(r.burst for r in patient) and not any(late(r) for r in patient)
    assert sum(1 for r in impatient if not r.burst and r.wait_s == 0) == 4
