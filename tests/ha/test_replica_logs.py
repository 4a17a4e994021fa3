"""Issue 13, the api role: `szb logs` of a job whose output only its backend holds (the local
executor, Slurm), asked of an API replica, says where the output is instead of printing
nothing and succeeding as if the job had written nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, ROOT
from tests.e2e.conftest import TOKENS, auth
from tests.e2e.test_cli_ux import error_info
from tests.e2e.test_jobs_api import TERMINAL, spec, wait_for
from tests.ha.conftest import Cluster


def test_szb_logs_through_a_replica_says_the_output_is_with_the_scheduler(cluster: Cluster) -> None:
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        printer = spec("printer", [JOB_PYTHON, "-c", "print('hello from the job')"])
        job = stub.SubmitJob(pb.SubmitJobRequest(job=printer), metadata=auth("team-a")).job
        done = wait_for(stub, job.id, TERMINAL, timeout=60)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamJobLogs(pb.StreamJobLogsRequest(id=job.id), metadata=auth("team-a"), timeout=30))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(err.value) == "OUTPUT_NOT_ON_REPLICA"
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED and "hello from the job" in done.log_tail
    env = {**os.environ, "SZB_TOKEN": TOKENS["team-a"]}
    run = subprocess.run(
        [sys.executable, "-m", "broker.cli", "logs", job.id, "--server", api.address],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode != 0, (run.stdout, run.stderr)
    assert "only the active scheduler reads it" in run.stderr, run.stderr
    assert f"szb get {job.id}" in run.stderr, run.stderr
