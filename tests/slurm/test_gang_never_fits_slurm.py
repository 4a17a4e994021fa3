"""A gang that cannot start (one node of its partition drained) holds no one behind it."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.slurm import SlurmAdapter
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import SiteId
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, auth, until_ended, write_onprem_config

pytestmark = pytest.mark.slurm


def _scontrol(cluster: SlurmCluster, *args: str) -> None:
    subprocess.run(["scontrol", *args], env={**os.environ, **cluster.env}, capture_output=True,
                   timeout=30, check=False)


def _job(name: str, script: str, *, nodes: int = 1, gpus: int = 0) -> job_pb2.JobSpec:
    job = job_pb2.JobSpec(name=name, command=["/bin/sh", "-c", script],
                          runtime_estimate=duration_pb2.Duration(seconds=120))
    job.resources.nodes = nodes
    job.resources.cpus = 1
    if gpus:
        job.resources.accelerators.count = gpus
        job.resources.accelerators.any_of.append("A800")
    return job


def test_a_gang_that_cannot_start_holds_no_job_behind_it(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    slurm_cluster.wait_usable()
    broker_id = f"szb-gangheld-{uuid.uuid4().hex[:8]}"
    proc = BrokerProcess(write_onprem_config(tmp_path, slurm_cluster.env, broker_id=broker_id))
    slurm = SlurmAdapter(SiteId(SITE), {"url": slurm_cluster.url, "token": slurm_cluster.token,
                                        "user": slurm_cluster.user, "broker_id": broker_id,
                                        "partitions": {"ascend": "Ascend910B", "a800": "A800", "cpu": None}})
    _scontrol(slurm_cluster, "update", "nodename=szb-ascend", "state=drain", "reason=szb-gang-held")
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            gang = stub.SubmitJob(pb.SubmitJobRequest(job=_job("gang", "echo gang", nodes=2)),
                                  metadata=auth()).job.id
            time.sleep(2)
            cpu = stub.SubmitJob(pb.SubmitJobRequest(job=_job("cpu", "echo one node")),
                                 metadata=auth()).job.id
            gpu = stub.SubmitJob(pb.SubmitJobRequest(job=_job("gpu", "echo a800", gpus=1)),
                                 metadata=auth()).job.id
            for job_id in (cpu, gpu):
                got = until_ended(stub, job_id, time.monotonic() + 90)
                assert got.state == job_pb2.JOB_STATE_SUCCEEDED, got.message
            held = stub.GetJob(pb.GetJobRequest(id=gang), metadata=auth()).job
            assert held.state != job_pb2.JOB_STATE_RUNNING and held.state not in (
                job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED), held
            _scontrol(slurm_cluster, "update", "nodename=szb-ascend", "state=resume")
            got = until_ended(stub, gang, time.monotonic() + 120)
            assert got.state == job_pb2.JOB_STATE_SUCCEEDED, got.message
            assert got.attempts == 1, got
    finally:
        _scontrol(slurm_cluster, "update", "nodename=szb-ascend", "state=resume")
        proc.stop()
        for inst in slurm.list_owned():
            slurm.cancel(inst.backend_id, inst.token or "")
        slurm_cluster.wait_usable()
