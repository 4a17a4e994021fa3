"""A cancelled Slurm job keeps the output it wrote before the cancel, as a finished one does.

Found by cancelling a running job on the test cluster through `szb serve`: the job view's
output tail (`szb get`) was empty, though the job had printed before the cancel and the output
file held it; a finished job's tail comes with the poll that sees it end, and a cancelled job
is closed by the broker itself, which never read it.
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
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import TERMINAL, auth, until_ended, write_onprem_config

pytestmark = pytest.mark.slurm

Stub = broker_service_pb2_grpc.BrokerServiceStub


@pytest.fixture
def onprem(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[tuple[Stub, Path]]:
    config = write_onprem_config(tmp_path, slurm_cluster.env, broker_id=f"szb-cancel-{uuid.uuid4().hex[:8]}")
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            yield Stub(channel), tmp_path / "slurm-output"
    finally:
        broker.stop()


def test_a_cancelled_slurm_job_shows_what_it_printed_before_the_cancel(onprem: tuple[Stub, Path]) -> None:
    stub, output_dir = onprem
    script = "echo printed before the cancel; echo second line; sleep 300"
    spec = job_pb2.JobSpec(name="cancelled", command=["/bin/sh", "-c", script],
                           runtime_estimate=duration_pb2.Duration(seconds=600))
    job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
    deadline = time.monotonic() + 60
    while not any("second line" in p.read_text() for p in output_dir.glob("*.out")):
        assert time.monotonic() < deadline, "the job never printed"
        time.sleep(0.2)
    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
    job = until_ended(stub, job_id, time.monotonic() + 60)
    assert job.state == job_pb2.JOB_STATE_CANCELLED and job.state in TERMINAL, job.message
    pieces = stub.StreamJobLogs(pb.StreamJobLogsRequest(id=job_id), metadata=auth())
    logs = b"".join(r.chunk.data for r in pieces)  # szb logs read it already: the file is there
    assert b"printed before the cancel\nsecond line" in logs, logs
    assert "printed before the cancel\nsecond line" in job.log_tail, repr(job.log_tail)
