"""The projected wait behind Slurm work the broker did not start (another user's jobs).

Two jobs submitted to Slurm directly (sbatch) hold the four A800s: two for 10 minutes and two
for 5 hours by their time limits. A 2-GPU job may start when the first ends; a 4-GPU job only
when both have. Before, the broker took all the busy units it did not start to free together
at the soonest of those ends, so it projected the 4-GPU job to start in 10 minutes and sent it
to Slurm's queue, where it would wait 5 hours past its one-hour max_wait.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokerproc import BrokerProcess, szb
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, TOKENS, write_onprem_config

pytestmark = pytest.mark.slurm


@pytest.fixture
def foreign(slurm_cluster: SlurmCluster) -> Iterator[None]:
    """Two sbatch jobs of another user's, 2 A800s each, time limits 10 min and 5 h."""
    ids = []
    try:
        for minutes in (10, 300):
            out = subprocess.run(
                [
                    "sbatch",
                    "--parsable",
                    "-p",
                    "a800",
                    "--gres=gpu:a800:2",
                    "-t",
                    str(minutes),
                    "-o",
                    "/dev/null",
                    "--wrap",
                    "sleep 3600",
                ],
                env={**slurm_cluster.env, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                check=True,
            )
            ids.append(out.stdout.strip().split(";")[0])
        _until_running(ids, {**slurm_cluster.env, "PATH": "/usr/bin:/bin"})
        yield
    finally:
        if ids:
            subprocess.run(["scancel", *ids], env={**slurm_cluster.env, "PATH": "/usr/bin:/bin"}, check=False)


def _until_running(ids: list[str], env: dict[str, str]) -> None:
    """Both jobs hold their units before the broker looks: a job still pending (an earlier
    test's work draining from the node) reports no end, and its units were counted at the
    backend's average wait instead of at each job's own end (seen in a full run)."""
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(ids), "-o", "%T"], env=env, capture_output=True, text=True
        )
        states = out.stdout.split()
        if len(states) == len(ids) and all(s == "RUNNING" for s in states):
            return
        assert time.monotonic() < deadline, f"foreign jobs never all ran: {states}"
        time.sleep(0.2)


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    config = write_onprem_config(tmp_path, slurm_cluster.env, broker_id=f"szb-foreign-{uuid.uuid4().hex[:8]}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy.read_text() + "burst:\n  wait_model: projected\n")
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def explain(broker: BrokerProcess, folder: Path, gpus: int) -> dict[str, Any]:
    path = folder / f"ask-{gpus}.yaml"
    path.write_text(
        f"name: ask-{gpus}\ncommand: [/bin/true]\nruntime_estimate: 10m\nmax_wait: 1h\n"
        f"resources:\n  accelerators: {{count: {gpus}, any_of: [A800]}}\n"
    )
    out = szb(broker, TOKENS["team-a"], "explain", str(path), "-o", "json")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout)["decision"])


def test_units_of_work_the_broker_did_not_start_free_when_their_own_jobs_end(
    foreign: None, broker: BrokerProcess, tmp_path: Path
) -> None:
    two = explain(broker, tmp_path, 2)
    assert two["projection"]["partition"] == f"{SITE}/a800", two
    assert 8 * 60 <= two["projection"]["wait_s"] <= 10 * 60, two["projection"]
    assert two["action"] == "run" and "sent to its queue" in two["reasons"][0], two
    four = explain(broker, tmp_path, 4)
    # Both jobs must end: the 5-hour one's time limit, not the 10-minute one's.
    assert 4.9 * 3600 <= four["projection"]["wait_s"] <= 5 * 3600, four["projection"]
    assert four["action"] == "wait" and "exceeds max_wait" in four["reasons"][0], four
    ends = sorted(r["ends_in_s"] for r in four["projection"]["running"])
    assert ends[0] <= 10 * 60 and ends[-1] >= 4.9 * 3600, four["projection"]
