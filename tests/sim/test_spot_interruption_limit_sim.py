"""`burst.spot_max_interruptions` in the simulator, as the live broker applies it (review of issue
15, F1): after that many spot interruptions a job runs on-demand, or fails if it requires spot."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from broker.model import SpotMode
from broker.policy import Policy, load_policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CONFIGS, POLICY

SPOT_CATALOG = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone,Currency
gpu.double,A800,2,16,128,20.0,6.0,r1,r1-a,CNY
"""

# A 2-GPU job the one on-prem GPU never runs: it bursts at once, to spot (the policy believes
# each site is interrupted once in 50 h) in a world that interrupts spot 5 times an hour. Four
# cloud sites alike: an interruption blocks one site's spot, the next is as cheap.
JOB = [TraceJob("long", 0, 2 * 3600, count=2, accelerators=("A800",), tenant="t1")]


SITES = ("cloud", "cloud-b", "cloud-c", "cloud-d")


def _policy(folder: Path, limit: int) -> Policy:
    (folder / "cloud.csv").write_text(SPOT_CATALOG)
    text = POLICY.format(configs=CONFIGS, gpus=1)
    cloud = text[text.index("  - id: cloud\n") : text.index("tenants:")]
    text = text.replace(cloud, "".join(cloud.replace("id: cloud", f"id: {s}") for s in SITES))
    risks = ", ".join(f"{s}: {{spot_interruption_risk: 0.02}}" for s in SITES)
    burst = f"  hysteresis: 0s\n  spot_max_interruptions: {limit}\n  sites: {{{risks}}}\n"
    text = text.replace("  hysteresis: 0s\n", burst)
    (folder / "policy.yaml").write_text(text)
    return load_policy(folder / "policy.yaml")


def _scenario(seed: int) -> Scenario:
    return Scenario(
        seed=seed, provisioning=Delay(min_s=60, mode_s=60, max_s=60), spot_interruptions_per_hour=5.0
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("limit", [1, 3])
def test_a_job_interrupted_limit_times_finishes_on_demand(tmp_path: Path, seed: int, limit: int) -> None:
    policy, scenario = _policy(tmp_path, limit), _scenario(seed)
    sim = simulate(policy, build_jobs(JOB, policy, scenario), scenario, baselines=(), lower_bound=False,
                   parallel=False)
    rec = sim.runs["policy"].records[0]
    assert rec.spot and rec.interruptions == limit, rec
    assert not math.isnan(rec.end_s), "it finished"
    # The whole 2 h on demand (20/h) after the spot runs (6/h, each under the hour of 5 interruptions).
    assert 40.0 <= rec.cost_cloud < 40.0 + 6.0 * limit * 2, rec
    assert rec.attempts == limit + 1, rec


def test_a_job_requiring_spot_fails_at_the_limit(tmp_path: Path) -> None:
    policy, scenario = _policy(tmp_path, 3), _scenario(1)
    (job,) = build_jobs(JOB, policy, scenario)
    job = replace(job, spec=job.spec.model_copy(update={"spot": SpotMode.REQUIRED}), shape=None)
    sim = simulate(policy, [job], scenario, baselines=(), lower_bound=False, parallel=False)
    rec = sim.runs["policy"].records[0]
    assert rec.interruptions == 3 and rec.attempts == 3 and math.isnan(rec.end_s), rec
    assert rec.failed, rec
    out = sim.result["strategies"]["policy"]
    assert out["spot_failed"] == 1 and out["spot_given_up"] == 0, out
