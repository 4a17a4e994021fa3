"""A job only spot could run, with more expected restarts than the policy allows, is refused at submit.

Found by a review of issue 15: such a job (spot required, 133.5 h, no checkpoint: 791 expected
restarts at 0.05 interruptions an hour, against a limit of 3) was accepted, then waited QUEUED for
ever as "no cloud offer is usable now": the restart limit is a property of the job and the policy,
not of the moment, and nothing would ever place it (`give_up_after` counts attempts it never had).
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
from broker.api import broker_service_pb2_grpc, job_pb2, placement_pb2
from tests.e2e.aws_nowhere import CATALOG_ONLY, aws_nowhere
from tests.e2e.conftest import auth


def _job(hours: float, checkpoint_s: int | None) -> job_pb2.JobSpec:
    job = job_pb2.JobSpec(
        name="long-spot", command=["true"], spot=job_pb2.SPOT_MODE_REQUIRED,
        runtime_estimate=duration_pb2.Duration(seconds=int(hours * 3600)),
    )
    job.resources.accelerators.count = 1
    job.resources.accelerators.any_of.append("A10G")
    if checkpoint_s is not None:
        job.checkpoint.interval.seconds = checkpoint_s
    return job


def test_a_spot_only_job_over_the_restart_limit_is_refused_at_submit(tmp_path: Path) -> None:
    broker = aws_nowhere(tmp_path, CATALOG_ONLY, metrics=False)
    broker.start(timeout=120)
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.SubmitJob(pb.SubmitJobRequest(job=_job(133.5, None)), metadata=auth("team-a"))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
            assert "spot expects" in refused.value.details() and "limit 3" in refused.value.details()
            # 40 h without a checkpoint expects 6.4 restarts; checkpointing every 10 min, 2.0: it is
            # taken (and waits for the cloud, which has no credentials here).
            with pytest.raises(grpc.RpcError) as refused:
                stub.SubmitJob(pb.SubmitJobRequest(job=_job(40, None)), metadata=auth("team-a"))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
            kept = stub.SubmitJob(pb.SubmitJobRequest(job=_job(40, 600)), metadata=auth("team-a")).job
            assert kept.id and kept.state == job_pb2.JOB_STATE_QUEUED
            # A short job needs no checkpoint: 0.05 expected restarts.
            short = stub.SubmitJob(pb.SubmitJobRequest(job=_job(1, None)), metadata=auth("team-a")).job
            assert short.id
            # Explain says so too (a review: "wait ... no cloud offer is usable now"), live ...
            asked = pb.ExplainPlacementRequest(job=_job(40, None))
            told = stub.ExplainPlacement(asked, metadata=auth("team-a")).explanation.decision
            assert told.action == placement_pb2.DECISION_ACTION_REJECT, told
            assert any("spot expects" in r for r in told.reasons), told
            kept_told = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=_job(40, 600)),
                                              metadata=auth("team-a")).explanation.decision
            assert kept_told.action != placement_pb2.DECISION_ACTION_REJECT, kept_told
    finally:
        broker.stop()
    # ... and offline, on the same policy file.
    (tmp_path / "long.yaml").write_text(
        "name: long-spot\ncommand: ['true']\nruntime_estimate: 40h\nspot: required\n"
        "resources: {accelerators: {count: 1, any_of: [A10G]}}\n"
    )
    offline = subprocess.run(
        [sys.executable, "-m", "broker.cli", "explain", "long.yaml", "--policy", "policy.yaml",
         "--tenant", "team-a", "-o", "json"], cwd=tmp_path, capture_output=True, text=True,
    )
    decision = json.loads(offline.stdout)["decision"]
    assert decision["action"] == "reject" and "spot expects" in decision["reasons"][0], decision
