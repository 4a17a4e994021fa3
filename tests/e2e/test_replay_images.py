"""`szb policy replay` refuses container-image jobs where the live broker did (a local site).

Found by a review: on a local-only policy the broker refused three image jobs at submit
(`site.images`), but replaying the policy in force ran them on-prem: the simulator never told
placement which sites run no image (the live adapters say so; offline tools read the policy).
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
from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config


def test_replay_refuses_the_image_jobs_the_broker_refused(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            plain = job_pb2.JobSpec(name="plain", command=[PY, "-c", "pass"],
                                    runtime_estimate=duration_pb2.Duration(seconds=60))
            stub.SubmitJob(pb.SubmitJobRequest(job=plain), metadata=auth("team-a"))
            image = job_pb2.JobSpec(name="img", command=["python3", "-c", "pass"],
                                    image="docker.io/library/python:3.12",
                                    runtime_estimate=duration_pb2.Duration(seconds=600))
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.SubmitJob(pb.SubmitJobRequest(job=image), metadata=auth("team-a"))
                assert "site.images" in refused.value.details()
    finally:
        broker.stop()
    replay = subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "replay", "--policy", str(tmp_path / "policy.yaml"),
         "--data-dir", str(tmp_path / "data"), "--output", "json"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert replay.returncode == 0, replay.stderr
    current = json.loads(replay.stdout)["current"]
    assert current["rejected"] == 3 and current["jobs"] == 1, current
