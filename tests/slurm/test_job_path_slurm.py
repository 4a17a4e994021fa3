"""A job whose env sets a PATH without /bin keeps its exit code (szb serve over gRPC, real Slurm).

The batch script's own commands (`mv` of `<token>.rc` and `<token>.started` into place, a
gang's `srun`, `hostname`, `cat`, `tee`) ran under the job's PATH: with ``PATH:
/opt/conda/bin`` they were not found, no exit code was recorded, and a job that succeeded
while the broker was down past slurmctld's MinJobAge read FAILED. The script's own commands
now look in its own PATH, whatever the job sets.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.slurm._script import exit_code_file, rank_exit_file
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptState
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import PARTITIONS, SlurmCluster, Tracker
from tests.slurm.onprem import auth, until_ended, write_onprem_config
from tests.slurm.test_slurm_gang import gang

pytestmark = pytest.mark.slurm

NO_BIN = {"PATH": "/opt/conda/bin"}


def listed(cluster: SlurmCluster, job_id: str) -> bool:
    """slurmctld still lists a job carrying `job_id`'s marks (any state)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%k"], capture_output=True, text=True,
                         timeout=30, check=False, env={**os.environ, **cluster.env})
    return f"szb:job={job_id};" in out.stdout


def test_a_job_without_bin_in_its_path_succeeds_after_a_broker_outage_past_min_job_age(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    broker_id = f"szb-path-{uuid.uuid4().hex[:8]}"
    config = write_onprem_config(tmp_path / "b", slurm_cluster.env, broker_id=broker_id)
    broker = BrokerProcess(config)
    broker.start()
    try:
        script = "echo working; /bin/sleep 3; echo done"
        msg = job_pb2.JobSpec(name="pathok", command=["/bin/sh", "-c", script],
                              runtime_estimate=duration_pb2.Duration(seconds=60), env=NO_BIN)
        msg.resources.cpus = 1
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=msg), metadata=auth()).job.id
            deadline = time.monotonic() + 60
            get = pb.GetJobRequest(id=job_id)
            while stub.GetJob(get, metadata=auth()).job.state != job_pb2.JOB_STATE_RUNNING:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        broker.kill()
        deadline = time.monotonic() + 240  # the job ends, then slurmctld purges it after MinJobAge
        while listed(slurm_cluster, job_id):
            assert time.monotonic() < deadline, "slurmctld still lists the job"
            time.sleep(2)
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = until_ended(stub, job_id, time.monotonic() + 60)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
        assert job.exit_code == 0, job
    finally:
        broker.stop()


def test_a_gang_without_bin_in_its_path_records_every_ranks_exit_code(slurm: Tracker) -> None:
    adapter = slurm.make(partitions={**PARTITIONS, "cpu": None})
    request = gang("echo rank $RANK")
    request = request.model_copy(update={"spec": request.spec.model_copy(update={"env": NO_BIN})})
    backend_id = slurm.submit(request, adapter)
    status = slurm.wait(backend_id, {AttemptState.SUCCEEDED, AttemptState.FAILED})
    assert status.state == AttemptState.SUCCEEDED, status
    assert exit_code_file(adapter.settings, request.token, backend_id).read_text().strip() == "0"
    for rank in (0, 1):
        assert rank_exit_file(adapter.settings, request.token, backend_id, rank).read_text().strip() == "0"
