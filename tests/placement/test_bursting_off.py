"""`burst.enabled: false` turns bursting off: no cloud site runs a job, said as the reason (held-out
review: nothing read the flag, and `szb explain` still answered "decision: run (burst)")."""

from __future__ import annotations

import shutil
from pathlib import Path

from broker.burst import BurstInputs, decide
from broker.decision import Action
from broker.policy import load_policy
from broker.policy.offers import static_offers
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Scenario
from broker.sim.synthetic import SyntheticParams, generate
from tests.burst.test_decision import NOW, job

ROOT = Path(__file__).resolve().parents[2]


def _policy(tmp_path: Path) -> Path:
    """`configs/policy-sim.yaml` with bursting off, beside copies of the files it names."""
    configs = ROOT / "configs"
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(configs / name, tmp_path / name)
    shutil.copytree(configs / "catalog", tmp_path / "catalog")
    text = (configs / "policy-sim.yaml").read_text()
    assert "\nburst:\n  enabled: true\n" in text
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace("\nburst:\n  enabled: true\n", "\nburst:\n  enabled: false\n"))
    return path


def test_with_bursting_off_only_on_prem_runs_and_cloud_only_jobs_are_refused(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path))
    offers = static_offers(policy, read_at=NOW)
    inputs = BurstInputs(now=NOW, queued_since=NOW)
    home = decide(job(("A800",), count=1), "pku-nlp", offers, policy, inputs)
    assert home.action == Action.RUN and not home.burst  # on-prem free: as with bursting on
    away = decide(job(("H800",), count=1), "pku-nlp", offers, policy, inputs)  # no on-prem H800
    assert away.action == Action.REJECT
    assert away.reasons[0].startswith("burst.enabled: bursting is off (burst.enabled: false): ")
    jobs = build_jobs(generate(SyntheticParams(jobs=300), 3), policy, Scenario(seed=3))
    run = simulate(policy, jobs, Scenario(seed=3), baselines=(), lower_bound=False)
    assert run.result["strategies"]["policy"]["burst_fraction"] == 0.0
