"""Simulated jobs of a shape already built copy its spec (issue 15, speed): the same specs as
validating every job, and the same errors (pinned against `build_jobs(copy_shapes=False)`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import load_policy
from broker.sim.jobs import SimJob, build_jobs
from broker.sim.scenario import load_scenario
from broker.sim.synthetic import SyntheticParams, generate
from broker.sim.traces import TraceJob, read_trace

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRACE = CONFIGS / "traces/alibaba-gpu-v2023-openb-pods.csv.gz"


def _view(job: SimJob) -> tuple[object, ...]:
    spec = job.spec
    return (job, spec.model_dump(), sorted(spec.model_fields_set), job.shape)


@pytest.mark.parametrize(
    "name", ["alibaba-peak", "alibaba-peak-estimates", "alibaba-gpuspec", "synthetic-llm", "flood"]
)
def test_jobs_built_by_copying_their_shapes_spec_equal_jobs_validated_one_by_one(name: str) -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / f"scenarios/{name}.yaml")
    if name.startswith("alibaba"):
        trace, _ = read_trace(TRACE, max_runtime_s=scenario.max_runtime_s)
        trace = trace[:1500]
    else:
        trace = generate(SyntheticParams(jobs=1500), scenario.seed)
    fast = build_jobs(trace, policy, scenario)
    plain = build_jobs(trace, policy, scenario, copy_shapes=False)
    assert [_view(j) for j in fast] == [_view(j) for j in plain]
    assert len({id(j.spec.resources) for j in fast}) < len(fast) / 4  # copies were made
    assert len({j.spec.runtime_estimate for j in fast}) > len(fast) / 4  # each with its own runtime


def test_a_copied_job_with_a_fractional_runtime_gets_the_same_whole_second_spec() -> None:
    """A spec holds whole seconds: a runtime of 1.5 s (which once stopped the run with a pydantic
    dump) is estimated at 2 s, the same whether the job's spec is copied from its shape or built."""
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/synthetic-llm.yaml")
    # The second job has the first one's shape: only its runtime differs.
    trace = [TraceJob("a", 0.0, 3600.0, count=1), TraceJob("b", 1.0, 1.5, count=1)]
    copied, built = (build_jobs(trace, policy, scenario, copy_shapes=c) for c in (True, False))
    assert [j.spec for j in copied] == [j.spec for j in built]
    assert copied[1].spec.runtime_estimate.total_seconds() == 2.0 and copied[1].runtime_s == 1.5


def test_synthetic_jobs_with_the_weights_summed_once_equal_summing_them_per_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import broker.sim.synthetic as synthetic

    fast = generate(SyntheticParams(jobs=3000), 11)
    kept = synthetic._pick
    monkeypatch.setattr(synthetic, "_pick", lambda rng, choices, total=None: kept(rng, choices))
    assert generate(SyntheticParams(jobs=3000), 11) == fast
    assert len({(j.count, j.priority) for j in fast}) > 8  # every kind's counts and priorities drawn
