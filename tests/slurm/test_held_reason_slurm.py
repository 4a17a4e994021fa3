"""A job Slurm holds or suspends says so in the job view (szb serve over gRPC, real slurmrestd).

A job sent to Slurm's queue that an administrator held (``scontrol hold``: JobHeldAdmin) read
'attempt 1 on …: … sent to its queue' in `szb get` for as long as the hold lasted, and a
running job Slurm suspended still read 'running on …': neither would start or go on by
itself, and nothing said so. The job's reason now gives Slurm's state reason, and says when
the hold or the suspension is over.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import TOKENS, auth, write_onprem_config

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def broker(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("held")
    broker_id = f"szb-held-{uuid.uuid4().hex[:8]}"
    proc = BrokerProcess(write_onprem_config(folder, slurm_cluster.env, broker_id=broker_id))
    proc.start()
    yield proc
    proc.stop()


def spec(name: str, script: str, gpus: int, max_wait_s: int = 7200) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=["/bin/sh", "-c", script],
                          runtime_estimate=duration_pb2.Duration(seconds=600),
                          max_wait=duration_pb2.Duration(seconds=max_wait_s))
    msg.resources.accelerators.count = gpus
    msg.resources.accelerators.any_of.append("A800")
    return msg


def scontrol(cluster: SlurmCluster, *args: str) -> str:
    env = {**os.environ, **cluster.env}
    out = subprocess.run(["scontrol", *args], capture_output=True, text=True, env=env, timeout=30,
                         check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def slurm_id(cluster: SlurmCluster, job_id: str) -> str:
    """The Slurm job the broker started for `job_id` (its marks name it)."""
    env = {**os.environ, **cluster.env}
    out = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, env=env, timeout=30)
    return next(line.split()[0] for line in out.stdout.splitlines() if f"szb:job={job_id};" in line)


def reason(broker: BrokerProcess, job_id: str) -> str:
    out = szb(broker, TOKENS["team-a"], "get", job_id, "-o", "json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout).get("message", ""))


def until(check: Callable[[], bool], what: Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what()
        time.sleep(0.3)


def test_a_held_or_suspended_slurm_job_says_so(broker: BrokerProcess, slurm_cluster: SlurmCluster) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def get(job_id: str) -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job

        fill = stub.SubmitJob(pb.SubmitJobRequest(job=spec("fill", "sleep 600", 4)), metadata=auth()).job.id
        patient = ""
        try:
            until(lambda: get(fill).state == job_pb2.JOB_STATE_RUNNING, lambda: get(fill).message)
            patient = stub.SubmitJob(pb.SubmitJobRequest(job=spec("patient", "echo hi", 1)),
                                     metadata=auth()).job.id
            until(lambda: get(patient).state == job_pb2.JOB_STATE_PROVISIONING, lambda: get(patient).message)
            until(lambda: _listed(slurm_cluster, patient), lambda: "not at Slurm")
            # Held by an administrator while it pends in Slurm's queue.
            scontrol(slurm_cluster, "hold", slurm_id(slurm_cluster, patient))
            until(lambda: "JobHeldAdmin" in reason(broker, patient), lambda: reason(broker, patient))
            assert "held in Slurm by an administrator" in reason(broker, patient)
            scontrol(slurm_cluster, "release", slurm_id(slurm_cluster, patient))
            until(lambda: "released" in reason(broker, patient), lambda: reason(broker, patient))
            # Suspended while it runs.
            scontrol(slurm_cluster, "suspend", slurm_id(slurm_cluster, fill))
            until(lambda: "suspended in Slurm" in reason(broker, fill), lambda: reason(broker, fill))
            assert get(fill).state == job_pb2.JOB_STATE_RUNNING
            scontrol(slurm_cluster, "resume", slurm_id(slurm_cluster, fill))
            until(lambda: "released" in reason(broker, fill), lambda: reason(broker, fill))
        finally:
            for job_id in (fill, patient):
                if job_id:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())


def _listed(cluster: SlurmCluster, job_id: str) -> bool:
    try:
        slurm_id(cluster, job_id)
    except StopIteration:
        return False
    return True


def test_a_job_pending_in_a_partition_an_administrator_took_down_says_so(
    broker: BrokerProcess, slurm_cluster: SlurmCluster
) -> None:
    """Slurm's reason for a queued job was shown only for holds: one pending in a partition
    taken down for maintenance read 'sent to its queue' for as long as it was down."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def get(job_id: str) -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job

        fill = stub.SubmitJob(pb.SubmitJobRequest(job=spec("fill", "sleep 600", 4)), metadata=auth()).job.id
        patient, down = "", False
        try:
            until(lambda: get(fill).state == job_pb2.JOB_STATE_RUNNING, lambda: get(fill).message)
            patient = stub.SubmitJob(pb.SubmitJobRequest(job=spec("patient", "echo hi", 1)),
                                     metadata=auth()).job.id
            until(lambda: _listed(slurm_cluster, patient), lambda: get(patient).message)
            scontrol(slurm_cluster, "update", "partitionname=a800", "state=down")
            down = True
            until(lambda: "PartitionDown" in reason(broker, patient), lambda: reason(broker, patient))
            assert "its partition is down" in reason(broker, patient)
            scontrol(slurm_cluster, "update", "partitionname=a800", "state=up")
            down = False
            until(lambda: "released" in reason(broker, patient), lambda: reason(broker, patient))
        finally:
            if down:
                scontrol(slurm_cluster, "update", "partitionname=a800", "state=up")
            for job_id in (fill, patient):
                if job_id:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
