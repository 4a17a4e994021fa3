"""`szb policy replay` gives the reason the live broker gives for a spot restart-limit refusal.

Found by a review of issue 15 (F2): a candidate with `spot_max_expected_restarts: 0` refused a
stored spot-only job "job.spot: the job runs only on spot capacity" (the placement rule that
rejects the on-demand offers), where a submission under it is refused "spot: spot expects
0.05 restarts (limit 0; checkpoint: none)".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import ROOT
from tests.e2e.aws_nowhere import CATALOG_ONLY, aws_nowhere
from tests.e2e.conftest import auth


def _spot_job() -> job_pb2.JobSpec:
    job = job_pb2.JobSpec(name="spot-short", command=["true"], spot=job_pb2.SPOT_MODE_REQUIRED,
                          runtime_estimate=duration_pb2.Duration(seconds=3600))
    job.resources.accelerators.count = 1
    job.resources.accelerators.any_of.append("A10G")
    return job


def test_replay_names_the_spot_limit_a_submission_would_be_refused_for(tmp_path: Path) -> None:
    broker = aws_nowhere(tmp_path, CATALOG_ONLY, metrics=False)
    broker.start(timeout=120)
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            kept = stub.SubmitJob(pb.SubmitJobRequest(job=_spot_job()), metadata=auth("team-a")).job
            assert kept.id
    finally:
        broker.stop()
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text((tmp_path / "policy.yaml").read_text() + "burst:\n  spot_max_expected_restarts: 0\n")
    # What the live broker answers a submission under the candidate ...
    broker = aws_nowhere(tmp_path / "live", CATALOG_ONLY, metrics=False)
    (tmp_path / "live" / "policy.yaml").write_text(candidate.read_text())
    broker.start(timeout=120)
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.SubmitJob(pb.SubmitJobRequest(job=_spot_job()), metadata=auth("team-a"))
            live = refused.value.details()
    finally:
        broker.stop()
    assert "spot expects" in live and "limit 0" in live, live
    # ... is what the replay says refuses the stored job.
    replay = subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "replay", "--policy", str(candidate),
         "--data-dir", str(tmp_path / "data"), "--output", "json"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert replay.returncode == 0, replay.stderr
    (row,) = json.loads(replay.stdout)["refusals_new"]
    assert row["job"] == kept.id
    assert "spot expects" in row["reason"] and row["reason"] in live, (row["reason"], live)
