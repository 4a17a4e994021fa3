"""A job cancelled through an API replica keeps the output it wrote, as one cancelled in one process does.

The single-process broker reads a cancelled Slurm job's output once after the cancel and keeps
it as the job's tail; in HA the API replica records the cancel and the scheduler stops the job
(on the replica's notification, or its sweep) without reading it: `szb get` showed no tail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.ha.cloud import wait_until
from tests.ha.conftest import Cluster
from tests.ha.test_slurm_takeover import live_slurm_jobs, slurm_cluster_config
from tests.slurm.conftest import SlurmCluster, slurm_cluster, slurm_clusters
from tests.slurm.onprem import auth

__all__ = ["slurm_cluster", "slurm_clusters"]

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm_ha(slurm_cluster: SlurmCluster, tmp_path: Path, pg_dsn: str) -> Iterator[tuple[Cluster, Path]]:
    broker_id = f"szb-hacan-{uuid.uuid4().hex[:8]}"
    ha = slurm_cluster_config(tmp_path / "broker", slurm_cluster, pg_dsn, broker_id)
    try:
        yield ha, tmp_path / "broker" / "slurm-output"
    finally:
        ha.stop()
        assert not live_slurm_jobs(slurm_cluster, broker_id), "a cancelled job still runs in Slurm"


def test_a_job_cancelled_through_an_api_replica_keeps_its_output_tail(
    slurm_ha: tuple[Cluster, Path], slurm_cluster: SlurmCluster
) -> None:
    ha, output_dir = slurm_ha
    env = {"SZB_TEST_SLURM_URL": slurm_cluster.url}
    ha.start("scheduler", env)
    ha.leader()
    api = ha.start("api", env)
    script = "echo first; echo second; sleep 300"
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = job_pb2.JobSpec(name="cancelled", command=["/bin/sh", "-c", script],
                               runtime_estimate=duration_pb2.Duration(seconds=600))
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
        printed = lambda: any("second" in p.read_text() for p in output_dir.glob("*.out"))  # noqa: E731
        wait_until("the job printed", printed, timeout=90)
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
        get = pb.GetJobRequest(id=job_id)
        deadline = time.monotonic() + 60
        while "first\nsecond" not in (job := stub.GetJob(get, metadata=auth()).job).log_tail:
            assert time.monotonic() < deadline, f"no tail: {job.state} {job.message!r} {job.log_tail!r}"
            time.sleep(0.2)
        assert job.state == job_pb2.JOB_STATE_CANCELLED, job.message
