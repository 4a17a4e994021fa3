"""The simulator refuses a container image only where a site surely cannot run one.

A local site never runs images (the live adapter refuses them: `szb policy replay` of the policy
in force must refuse them too). A Slurm site runs them with a `container_runtime`, which
broker.yaml's `sites:` may set where the simulator cannot see it: a replay must not refuse image
jobs that ran there (a review of the first version, which did).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from broker.policy import load_policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import tiny_policy


def _rejected(policy_text_from: Path, adapter: str) -> list[bool]:
    policy = tiny_policy(policy_text_from, gpus=2)
    if adapter != "slurm":
        text = (policy_text_from / "policy.yaml").read_text().replace("adapter: slurm", f"adapter: {adapter}")
        (policy_text_from / "policy.yaml").write_text(text)
        policy = load_policy(policy_text_from / "policy.yaml")
    trace = [TraceJob(f"j{i}", 0, 600, count=1, accelerators=("A800",), tenant="t1", max_wait_s=3600)
             for i in range(2)]
    scenario = Scenario(seed=1)
    jobs = build_jobs(trace, policy, scenario)
    jobs[0] = replace(jobs[0], spec=jobs[0].spec.model_copy(update={"image": "registry.example.cn/x:1"}),
                      shape=None)
    sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False, parallel=False)
    return [r.rejected or r.burst for r in sim.runs["policy"].records]


def test_an_image_job_runs_on_slurm_and_is_refused_on_a_local_site(tmp_path: Path) -> None:
    (tmp_path / "slurm").mkdir()
    (tmp_path / "local").mkdir()
    assert _rejected(tmp_path / "slurm", "slurm") == [False, False]
    # On a local-only site the image job cannot run at home: refused (or sent to the cloud).
    assert _rejected(tmp_path / "local", "local") == [True, False]
