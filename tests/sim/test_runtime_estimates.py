"""Runtime estimates in the simulator are not clairvoyant (issue 15, the projected wait model):
users' estimates come from the scenario's error model, the policy decides and projects on them
corrected by the ratio it learns from the jobs it finishes (the live learner), the references
stay on actual runtimes. Asserts decisions and outcomes, not timings."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from broker.burst import TenantMoney
from broker.burst.runtimes import FEW, RatioLearner
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision
from broker.policy import Policy, load_policy
from broker.sim.backends import Partition
from broker.sim.engine import Engine
from broker.sim.expected import RunningEnds, clairvoyant, estimate_of
from broker.sim.jobs import SimJob, build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Delay, RuntimeEstimates, Scenario, ScenarioError, load_scenario
from broker.sim.strategies import PolicyStrategy
from tests.sim.conftest import CATALOG, CONFIGS, POLICY, load_bench, tiny_policy
from tests.sim.test_projected_wait import a800, projected_policy

TWICE = RuntimeEstimates(bias={"t1": 2.0})


def test_estimates_follow_the_knob_deterministically_and_default_to_exact(tmp_path: Path) -> None:
    policy = tiny_policy(tmp_path)
    trace = [a800(f"j{i}", i * 10.0, 600.0 + 60 * i) for i in range(20)]
    exact = build_jobs(trace, policy, Scenario(seed=3))
    assert [estimate_of(j) for j in exact] == [j.runtime_s for j in exact]
    assert [estimate_of(j) for j in build_jobs(trace, policy, Scenario(seed=3, runtime_estimates=TWICE))] == [
        2 * j.runtime_s for j in exact
    ]
    noisy = Scenario(seed=3, runtime_estimates=RuntimeEstimates(default_bias=2.0, sigma=0.5))
    first = [estimate_of(j) for j in build_jobs(trace, policy, noisy)]
    assert first == [estimate_of(j) for j in build_jobs(trace, policy, noisy)]  # seeded
    assert first != [estimate_of(j) for j in build_jobs(trace, policy, noisy.model_copy(update={"seed": 4}))]
    ratios = sorted(e / j.runtime_s for e, j in zip(first, exact, strict=True))
    assert ratios[0] < 2.0 < ratios[-1] and 1.3 < ratios[10] < 3.0  # noise around the bias


def test_the_bound_offline_schedule_and_baselines_ignore_the_estimates(tmp_path: Path) -> None:
    # Two GPUs' worth of work on one GPU and a budget for a few bursts: the baselines burst as
    # far as the money reaches. The references are the same whatever users estimate (a 3x
    # estimate would reserve 3x the money); only the policy's own run may change.
    (tmp_path / "cloud.csv").write_text(CATALOG)
    text = POLICY.format(configs=CONFIGS, gpus=1).replace("monthly_budget: 100000", "monthly_budget: 40")
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    trace = [a800(f"j{i}", i * 300.0, 1800.0 + 600 * (i % 3)) for i in range(12)]
    noisy = Scenario(seed=2, runtime_estimates=RuntimeEstimates(default_bias=3.0, sigma=0.8))
    got = [
        simulate(policy, build_jobs(trace, policy, sc), sc, parallel=False, per_strategy_bounds=True).result
        for sc in (Scenario(seed=2), noisy)
    ]
    # (The budget pays too few bursts to start every job on time: no all-on-time bound, in both.)
    assert got[0]["lower_bound_cost"] is None and got[1]["lower_bound_cost"] is None
    assert got[0]["offline_cost"] is not None and got[0]["offline_cost"] == got[1]["offline_cost"]
    for name in ("onprem-only", "cloud-cheapest", "cheapest-offer"):
        bound = got[0]["strategies"][name]["lower_bound_cost"]  # at the baseline's own late count
        assert bound is not None and bound == got[1]["strategies"][name]["lower_bound_cost"]
        assert got[0]["strategies"][name]["cost"] == got[1]["strategies"][name]["cost"]
        assert got[0]["strategies"][name]["slo_attainment"] == got[1]["strategies"][name]["slo_attainment"]


def test_the_references_see_actual_runtimes(tmp_path: Path) -> None:
    policy = tiny_policy(tmp_path)
    jobs = build_jobs([a800("a", 0, 600.0)], policy, Scenario(runtime_estimates=TWICE))
    assert estimate_of(jobs[0]) == 1200.0 and estimate_of(clairvoyant(jobs)[0]) == 600.0
    # Completion and billing follow the actual runtime, whatever the estimate.
    sim = simulate(policy, jobs, Scenario(runtime_estimates=TWICE), baselines=(), lower_bound=False)
    rec = sim.runs["policy"].records[0]
    assert rec.end_s - rec.start_s == pytest.approx(600.0)
    assert rec.cost_onprem == pytest.approx(2.0 * 600 / 3600)


def test_the_simulator_learns_a_twice_over_estimating_tenants_ratio(tmp_path: Path) -> None:
    policy = projected_policy(tmp_path)
    scenario = Scenario(seed=1, runtime_estimates=TWICE)
    jobs = build_jobs([a800(f"h{i}", i * 700.0, 600.0) for i in range(5)], policy, scenario)
    engine = Engine(policy, jobs, scenario, PolicyStrategy(policy))
    engine.run()
    assert engine.projected.running.learner.ratio("t1") == pytest.approx(0.5)
    assert engine.projected.running.learner.ratio("someone-else") == 1.0
    # ... and the run's JSON says what it learned.
    sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False)
    assert sim.result["strategies"]["policy"]["runtime_ratios"] == {"t1": 0.5}


def test_a_running_jobs_expected_end_shrinks_with_the_learned_ratio(tmp_path: Path) -> None:
    policy = tiny_policy(tmp_path)
    job = build_jobs([a800("a", 0, 3600.0)], policy, Scenario(runtime_estimates=TWICE))[0]
    learner = RatioLearner()
    running = RunningEnds(["onprem/gpu"], learner)
    running.started("onprem/gpu", job, 100.0, 0.0)
    assert running.ends("onprem/gpu") == [(100.0 + 7200.0, 1)]  # no history: the estimate
    assert running.expected_left(job, 0.0) == 7200.0
    for _ in range(FEW):  # (fewer move it only part of the way)
        learner.observe("t1", 2000.0, 1000.0)
    assert running.ends("onprem/gpu") == [(100.0 + 3600.0, 1)]  # learned 0.5: half as long
    assert running.expected_left(job, 600.0) == 3000.0  # less the work a checkpoint saved


class Recording(PolicyStrategy):
    """The policy's own decisions, kept per job (the test reads what it projected)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.seen: dict[str, list[Decision]] = {}

    def decide(
        self, job: SimJob, snap: PassSnapshot, money: TenantMoney, pending: datetime | None
    ) -> Decision:
        d = super().decide(job, snap, money, pending)
        self.seen.setdefault(job.id, []).append(d)
        return d


@pytest.mark.parametrize(("history", "projected_s"), [(FEW, 1140.0), (0, 2340.0)])
def test_projections_use_the_learned_ratio_not_the_actual_runtime(
    tmp_path: Path, history: int, projected_s: float
) -> None:
    # t1 estimates every job 2x too long. A (20 min actual, 40 min estimated) holds the only
    # GPU; B (max_wait 30 min) arrives a minute later. Having learned 0.5 from t1's finished
    # jobs, the policy projects A's real end (19 min: B waits on-prem); without history it
    # projects A's estimate (39 min: B is late and plans a burst at its last responsible
    # moment). Never A's actual runtime unless learned: the simulator is not clairvoyant.
    policy = projected_policy(tmp_path)
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60), runtime_estimates=TWICE)
    t0 = 700.0 * history
    trace = [a800(f"h{i}", i * 700.0, 600.0) for i in range(history)]
    trace += [a800("a", t0, 1200.0), a800("b", t0 + 60, 3600.0)]
    jobs = build_jobs(trace, policy, scenario)
    strategy = Recording(policy)
    records = Engine(policy, jobs, scenario, strategy).run().records
    first = strategy.seen[jobs[-1].id][0]
    assert first.action == Action.WAIT
    assert first.facts.onprem_expected_wait_s == pytest.approx(projected_s, abs=1)
    assert (first.facts.burst_in_s is None) is (history > 0)  # late without history: a burst is planned
    # A ends before B's last responsible moment either way: B runs on-prem, on time.
    assert not records[-1].burst and records[-1].start_s == pytest.approx(t0 + 1200.0)


@pytest.mark.parametrize(
    ("knob", "field"),
    [
        ("{bias: {t1: -2}}", "runtime_estimates.bias.t1"),
        ("{sigma: lots}", "runtime_estimates.sigma"),
        ("{sigma: -1}", "runtime_estimates.sigma"),
        ("{biass: {t1: 2}}", "runtime_estimates.biass"),
        ("2.0", "runtime_estimates"),
        ("{sigma: .nan}", "runtime_estimates.sigma"),  # NaN compares false: it passed ge=0
        ("{bias: {t1: .inf}}", "runtime_estimates.bias.t1"),
    ],
)
def test_a_bad_estimate_knob_names_the_field(tmp_path: Path, knob: str, field: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(f"seed: 1\nruntime_estimates: {knob}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    # FILE:LINE:COL (the knob sits on line 2), then the field.
    assert re.match(rf"{re.escape(str(path))}:2:\d+: {re.escape(field)}:", str(err.value)), str(err.value)


def test_the_shipped_estimates_scenario_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    got = load_scenario(root / "configs/scenarios/alibaba-peak-estimates.yaml")
    base = load_scenario(root / "configs/scenarios/alibaba-peak.yaml")
    assert got.runtime_estimates is not None and got.runtime_estimates.sigma == 0.5
    drop = {"name", "description", "runtime_estimates"}
    assert got.model_dump(exclude=drop) == base.model_dump(exclude=drop)  # only the estimates differ


def test_the_decision_quality_bench_runs_the_estimates_scenario_by_default() -> None:
    root = Path(__file__).resolve().parents[2]
    bench = load_bench("decision_quality")
    assert "alibaba-peak-estimates" in bench.STANDARD
    assert (root / "configs/scenarios/alibaba-peak-estimates.yaml").is_file()


def test_the_backends_expected_wait_forgets_a_job_that_ended_before_its_estimate() -> None:
    part = Partition("p/x", 2, True, free=2)
    part.start(1, 1000.0)  # estimated to end at 1000, really ends at 100
    part.start(1, 5000.0)
    part.finish(100.0, 1, 1000.0)
    part.start(1, 3000.0)  # the freed unit is taken again: the next end is 3000, not the stale 1000
    assert part.expected_wait_s(100.0) == 2900.0
    part.finish(200.0, 1, 3000.0)
    part.start(1, 9000.0)
    assert part.expected_wait_s(200.0) == 4800.0
    assert not part.gone  # nothing left to drop: every dropped entry was found


def test_a_bias_for_an_unknown_tenant_names_it(tmp_path: Path) -> None:
    policy = tiny_policy(tmp_path)
    scenario = Scenario(runtime_estimates=RuntimeEstimates(bias={"t1": 2.0, "t2-typo": 2.0}))
    with pytest.raises(ScenarioError) as err:
        build_jobs([a800("a", 0, 600.0)], policy, scenario)
    assert str(err.value) == "runtime_estimates.bias.t2-typo: no such tenant (known: t1)"


def test_a_simulated_world_must_be_given_the_jobs_the_policy_decides(tmp_path: Path) -> None:
    """Without the jobs as submitted the policy would silently run on none: it is required."""
    from broker.sim.run import _World

    policy = tiny_policy(tmp_path)
    jobs = build_jobs([a800("j0", 0.0, 600.0)], policy, Scenario(seed=3))
    with pytest.raises(TypeError, match="decided"):
        _World(policy, jobs, Scenario(seed=3), (), False, False, None)  # type: ignore[call-arg]
    world = _World(policy, jobs, Scenario(seed=3), (), False, False, None, jobs)
    assert [j.id for j in world.decided] == [j.id for j in jobs]
