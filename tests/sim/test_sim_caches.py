"""The simulator's shortcuts decide exactly like the plain path (issue 15, speed): the facts
built from one placement per job shape, and the audit's shape memo (same answers, not timings)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from broker.burst.snapshot import PassSnapshot
from broker.model import Offer
from broker.placement import PlacementContext, place, prepare_offers
from broker.policy import Policy, load_policy
from broker.policy.offers import static_offers
from broker.sim.audit import Auditor
from broker.sim.baselines import Baseline, Kind
from broker.sim.engine import Engine
from broker.sim.facts import JobFacts, all_facts, job_facts
from broker.sim.jobs import EPOCH, SimJob, build_jobs, shape_spec
from broker.sim.scenario import load_scenario
from broker.sim.traces import read_trace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRACE = CONFIGS / "traces/alibaba-gpu-v2023-openb-pods.csv.gz"
RUNTIME_RULE = """\
    - id: long-jobs-off-spot
      deny: 'job.runtime_hours > 2.0 && offer.spot'
      reason: "long jobs do not run on spot"
"""


def _jobs(policy: Policy, n: int = 400, scenario_name: str = "alibaba-peak") -> list[SimJob]:
    scenario = load_scenario(CONFIGS / f"scenarios/{scenario_name}.yaml")
    trace, _ = read_trace(TRACE, max_runtime_s=scenario.max_runtime_s)
    step = max(1, len(trace) // n)  # spread over the trace: every tenant, shape and runtime range
    return build_jobs(trace[::step][:n], policy, scenario)


def _policy_reading_runtime(folder: Path) -> Policy:
    text = (CONFIGS / "policy-sim.yaml").read_text()
    text = text.replace("accelerators: accelerators.yaml", f"accelerators: {CONFIGS}/accelerators.yaml")
    text = text.replace("regimes: regimes.yaml", f"regimes: {CONFIGS}/regimes.yaml")
    text = text.replace("file: catalog/", f"file: {CONFIGS}/catalog/")
    text = text.replace("  rules:\n", "  rules:\n" + RUNTIME_RULE, 1)
    path = folder / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


def _plain(jobs: list[SimJob], policy: Policy) -> list[JobFacts]:
    offers = prepare_offers(static_offers(policy, read_at=EPOCH), policy)
    return [job_facts(j, policy, offers) for j in jobs]


def _view(f: JobFacts) -> tuple[object, ...]:
    def keys(offers: tuple[object, ...]) -> list[tuple[str, int]]:
        return [(o.key, o.count) for o in offers]  # type: ignore[attr-defined]

    views = (keys(f.allowed), f.onprem, f.cloud_cost, f.cost, keys(f.by_cost), keys(f.onprem_ranked))
    return (*views, keys(f.cloud_by_cost), f.cloud_floor)


@pytest.mark.parametrize("scenario", ["alibaba-peak", "alibaba-gpuspec"])  # GPU model lists dropped / kept
def test_facts_from_job_shapes_equal_one_placement_per_job(scenario: str) -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    jobs = _jobs(policy, scenario_name=scenario)
    assert shape_spec(jobs[0].spec, policy) is not None  # the shortcut is taken
    fast, plain = all_facts(jobs, policy), _plain(jobs, policy)
    assert [_view(f) for f in fast] == [_view(f) for f in plain]
    assert any(f.onprem_ranked and f.cloud_cost is not None for f in fast)  # both sides exercised
    assert len({len(f.onprem_ranked) for f in fast}) > 1


@pytest.mark.parametrize("scenario", ["alibaba-peak-estimates", "synthetic-llm"])
def test_facts_priced_a_table_at_a_time_equal_each_job_priced_alone(scenario: str) -> None:
    from broker.sim.synthetic import SyntheticParams, generate

    policy = load_policy(CONFIGS / "policy-sim.yaml")
    if scenario == "synthetic-llm":
        world = load_scenario(CONFIGS / f"scenarios/{scenario}.yaml")
        jobs = build_jobs(generate(SyntheticParams(jobs=900), world.seed), policy, world)
    else:
        jobs = _jobs(policy, 900, scenario)
    fast = all_facts(jobs, policy)
    assert [_view(f) for f in fast] == [_view(f) for f in _plain(jobs, policy)]
    # Within one shape's table, some jobs had spot offers dropped (too many expected restarts)
    # and others kept them: rows with and without dropped offers were priced together.
    sizes: dict[tuple[str, int], set[int]] = {}
    for j, f in zip(jobs, fast, strict=True):
        sizes.setdefault((j.tenant, id(j.shape)), set()).add(len(f.allowed))
    assert any(len(s) > 1 for s in sizes.values()) or scenario == "synthetic-llm"  # (none drop there)
    assert len(sizes) < len(jobs) / 4  # several jobs per shape, so per table


def test_a_rule_reading_the_runtime_turns_the_shape_shortcut_off(tmp_path: Path) -> None:
    policy = _policy_reading_runtime(tmp_path)
    jobs = _jobs(policy, 200)
    assert shape_spec(jobs[0].spec, policy) is None
    fast = all_facts(jobs, policy)
    assert [_view(f) for f in fast] == [_view(f) for f in _plain(jobs, policy)]
    long_jobs = [f for j, f in zip(jobs, fast, strict=True) if j.runtime_s > 2 * 3600]
    assert long_jobs and not any(o.spot for f in long_jobs for o in f.allowed)  # the rule bit


@pytest.mark.parametrize("path", [("job",), ("job", "name"), ("job", "runtime_hours")])
def test_shape_spec_refuses_rules_reading_the_job_whole_or_its_runtime(path: tuple[str, ...]) -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    spec = _jobs(policy, 1)[0].spec
    policy.rules.job_paths = (path,)
    assert shape_spec(spec, policy) is None


def test_the_audit_by_shape_answers_like_the_audit_of_each_job() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    jobs = _jobs(policy, 150)
    offers = static_offers(policy, read_at=EPOCH)
    by_shape, plain = Auditor(policy, 1), Auditor(policy, 1, by_shape=False)
    fast = [by_shape.allows(j, o, j.arrival_s) for j in jobs for o in offers]
    assert fast == [plain.allows(j, o, j.arrival_s) for j in jobs for o in offers]
    assert 0 < sum(fast) < len(fast)  # some offers allowed and some denied: both answers compared


class _PlainBaseline(Baseline):
    """The reference: each cloud offer placed for the job itself under the pass's blocks, no memo."""

    blocked_passes = 0

    def _usable(self, job: SimJob, snap: PassSnapshot, offers: Sequence[Offer]) -> Sequence[Offer]:
        if not snap.blocked or not offers:
            return offers
        _PlainBaseline.blocked_passes += 1
        ctx = PlacementContext(now=snap.now, blocked=snap.blocked)
        keep = {s.offer.key for s in place(job.spec, job.tenant, list(offers), self.policy, ctx).allowed}
        return [o for o in offers if o.key in keep]


@pytest.mark.parametrize("kind", ["cloud-cheapest", "cheapest-offer"])
def test_baselines_keep_block_verdicts_by_shape_and_decide_as_placing_each_job(kind: Kind) -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/alibaba-peak.yaml")
    trace, _ = read_trace(TRACE, max_runtime_s=scenario.max_runtime_s)
    jobs = build_jobs(trace[:900], policy, scenario)
    facts = all_facts(jobs, policy)

    def run(strategy: Baseline) -> list[tuple[object, ...]]:
        got = Engine(policy, jobs, scenario, strategy).run()
        return [(r.start_s, r.cost, r.burst, r.attempts, r.rejected) for r in got.records]

    _PlainBaseline.blocked_passes = 0
    plain = run(_PlainBaseline(kind, policy, facts))
    assert _PlainBaseline.blocked_passes > 0  # failover blocks were in force for some decisions
    assert run(Baseline(kind, policy, facts)) == plain


@pytest.mark.parametrize("name", ["alibaba-peak", "synthetic-llm", "flood"])
def test_jobs_of_one_shape_share_a_shape_spec_equal_to_their_own(name: str) -> None:
    from broker.sim.synthetic import SyntheticParams, generate

    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / f"scenarios/{name}.yaml")
    trace = generate(SyntheticParams(jobs=600), scenario.seed)
    jobs = build_jobs(trace, policy, scenario)
    assert all(j.shape == shape_spec(j.spec, policy) for j in jobs)
    assert len({id(j.shape) for j in jobs}) < len(jobs) / 4  # shared, not one per job


@pytest.mark.parametrize("scenario", ["alibaba-peak", "alibaba-gpuspec"])
def test_a_run_with_the_shape_shortcuts_off_gives_the_same_figures(
    scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.sim.jobs as sim_jobs
    from broker.sim.run import simulate

    policy = load_policy(CONFIGS / "policy-sim.yaml")
    world = load_scenario(CONFIGS / f"scenarios/{scenario}.yaml")

    def figures() -> dict[str, object]:
        jobs = _jobs(policy, 500, scenario)
        out = simulate(policy, jobs, world, parallel=False).result
        timed = {name: {k: v for k, v in s.items() if k != "wall_s"} for name, s in out["strategies"].items()}
        untimed = {k: v for k, v in out.items() if k not in ("sim_wall_s", "lower_bound_s", "offline_s")}
        return untimed | {"strategies": timed}

    fast = figures()
    monkeypatch.setattr(sim_jobs, "shape_spec", lambda spec, policy: None)  # every job placed as itself
    assert figures() == fast
