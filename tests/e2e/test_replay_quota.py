"""`szb policy replay` applies a candidate's `limits.max_queued_jobs` at submission, as the live
broker answers RESOURCE_EXHAUSTED, and names the limits it does not model.

Found by a review of issue 15 (F3): a candidate with `max_queued_jobs: 0`, under which the live
broker refuses every submission, replayed the same totals as the policy in force, unsaid.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config

LIMITS = "limits: {max_queued_jobs: 20000, submit_burst: 20000}"


def _job(name: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(name=name, command=[PY, "-c", "pass"],
                           runtime_estimate=duration_pb2.Duration(seconds=60))


def _submit_all(folder: Path, names: list[str], refusals: list[str] | None = None) -> list[str]:
    """Each job submitted by team-a to a broker on `folder`: the ids taken; RESOURCE_EXHAUSTED
    answers' details go to `refusals`."""
    broker = BrokerProcess(write_broker_config(folder) if not (folder / "broker.yaml").exists()
                           else folder / "broker.yaml")
    broker.start()
    taken = []
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for name in names:
                try:
                    answer = stub.SubmitJob(pb.SubmitJobRequest(job=_job(name)), metadata=auth("team-a"))
                    taken.append(answer.job.id)
                except grpc.RpcError as refused:
                    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()
                    if refusals is not None:
                        refusals.append(refused.details())
    finally:
        broker.stop()
    return taken


def test_replay_refuses_submissions_over_the_candidates_max_queued_jobs(tmp_path: Path) -> None:
    assert len(_submit_all(tmp_path, ["a", "b"])) == 2
    policy = (tmp_path / "policy.yaml").read_text()
    assert LIMITS in policy
    candidate = tmp_path / "candidate.yaml"
    tighter = "limits: {max_queued_jobs: 0, submit_burst: 20000, max_env: 8}"
    candidate.write_text(policy.replace(LIMITS, tighter))
    # The live broker under the candidate takes none of them ...
    live = tmp_path / "live"
    live.mkdir()
    write_broker_config(live)
    (live / "policy.yaml").write_text(candidate.read_text())
    answers: list[str] = []
    assert _submit_all(live, ["a", "b"], answers) == [] and len(answers) == 2
    # ... and neither does the replay, saying why, and which of the candidate's limits it does not model.
    replay = subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "replay", "--policy", str(candidate),
         "--data-dir", str(tmp_path / "data"), "--output", "json"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert replay.returncode == 0, replay.stderr
    out = json.loads(replay.stdout)
    assert out["current"]["rejected"] == 0 and out["candidate"]["rejected"] == 2, out
    reasons = [row["reason"] for row in out["refusals_new"]]
    assert len(reasons) == 2, reasons
    assert all(r in answers[0] and "max_queued_jobs" in r for r in reasons), (reasons, answers)
    assert out["not_modelled"] == ["limits.max_env"], out.get("not_modelled")
    table = subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "replay", "--policy", str(candidate),
         "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert table.returncode == 0, table.stderr
    assert "not modelled" in table.stdout and "limits.max_env" in table.stdout, table.stdout
