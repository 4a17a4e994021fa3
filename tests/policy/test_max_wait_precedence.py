"""Which `burst.max_wait` default a job gets: its priority's, then its tenant kind's, then `default`.

A `by_tenant_kind` entry is read only for a priority `by_priority` does not list; one that lists
every priority leaves it nothing, and `szb policy check` says so (the shipped policy did that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.policy.test_check import BASE, CONFIGS, Cli

ROOT = CONFIGS.parent
HEAD = BASE + "objective: {wait_hour_cost: 40}\nburst:\n  max_wait:\n    default: 30m\n"
SME_JOB = """name: sme-train
command: ["python3", "train.py"]
resources:
  accelerators: {count: 1, any_of: [A800, Ascend910B, A10]}
runtime_estimate: 2h
"""


def test_a_tenant_kind_every_priority_shadows_is_warned_about(
    cli: Cli, write_policy: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """by_priority names high, normal and low: by_tenant_kind.university can never apply."""
    text = HEAD + "    by_priority: {high: 10m, normal: 30m, low: 4h}\n    by_tenant_kind: {university: 1h}\n"
    path = write_policy(text)
    assert cli(["policy", "check", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    line = len(text.splitlines())
    assert (
        f"{path}:{line}:34: warning: burst.max_wait.by_tenant_kind.university never applies: "
        "burst.max_wait.by_priority sets every priority (high, normal, low), and a job's priority is "
        "looked up before its tenant's kind"
    ) in err, err
    assert cli(["policy", "check", "--strict", str(path)]) == 1
    capsys.readouterr()
    path = write_policy(text.replace(" normal: 30m,", ""))  # normal jobs now take the kind's
    assert cli(["policy", "check", "--strict", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_shipped_policy_gives_an_sme_tenants_normal_job_its_kinds_max_wait(tmp_path: Path) -> None:
    """configs/policy.yaml says `by_tenant_kind: {sme: 1h}`: zhipu-sme's job (normal priority, no
    max_wait of its own) waits an hour, not the 30 min every normal job got."""
    job = tmp_path / "sme-job.yaml"
    job.write_text(SME_JOB)
    policy = str(CONFIGS / "policy.yaml")
    args = ["explain", str(job), "--policy", policy, "--tenant", "zhipu-sme", "-o", "json"]
    env = {k: v for k, v in os.environ.items() if k != "SZB_SERVER"}
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["decision"]["max_wait_s"] == 3600
    checked = subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "check", "--strict", policy],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert checked.returncode == 0 and "warning" not in checked.stderr, checked.stderr
