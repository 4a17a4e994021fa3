"""A Slurm job that starts and ends between two polls still ran, from Slurm's start time
(szb serve over gRPC, real slurmrestd).

Such a job went PROVISIONING -> SUCCEEDED with no RUNNING event: no start time in `szb get`, RAN
"-" in `szb list --wide`. The poll that sees it ended now records its run first, dated when Slurm
says it started (the job record's start_time), not when the broker learnt it.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.job_events import events_until
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import TERMINAL, auth, until_ended, write_onprem_config

pytestmark = pytest.mark.slurm
POLL_S = 5.0
"""Long enough that a job running `true` has started and ended at Slurm before a poll sees it run."""


@pytest.fixture(scope="module")
def broker(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("fastrun")
    broker_id = f"szb-fastrun-{uuid.uuid4().hex[:8]}"
    config = write_onprem_config(folder, slurm_cluster.env, broker_id=broker_id, poll_interval_s=POLL_S)
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def slurm_record(cluster: SlurmCluster, job_id: str) -> dict[str, object]:
    """slurmrestd's record of the Slurm job the broker ran for `job_id` (its marks name it)."""
    env = {**os.environ, **cluster.env}
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %k"], capture_output=True, text=True,
                         env=env, timeout=30, check=True)
    slurm_id = next(line.split()[0] for line in out.stdout.splitlines() if f"szb:job={job_id};" in line)
    headers = {"X-SLURM-USER-NAME": cluster.user, "X-SLURM-USER-TOKEN": cluster.token}
    reply = httpx.get(f"{cluster.url.rstrip('/')}/slurm/v0.0.38/job/{slurm_id}", headers=headers, timeout=30)
    reply.raise_for_status()
    record: dict[str, object] = reply.json()["jobs"][0]
    return record


def test_a_slurm_job_over_before_a_poll_saw_it_run_ran_from_slurms_start_time(
    broker: BrokerProcess, slurm_cluster: SlurmCluster
) -> None:
    spec = job_pb2.JobSpec(name="quick", command=["/bin/sh", "-c", "true"],
                           runtime_estimate=duration_pb2.Duration(seconds=600))
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
        job = until_ended(stub, job_id, time.monotonic() + 180)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
        events = events_until(stub, job_id, auth(), lambda evs: evs[-1].state in TERMINAL)
    record = slurm_record(slurm_cluster, job_id)
    assert record["job_state"] == "COMPLETED", record["job_state"]
    states = [e.state for e in events]
    assert job_pb2.JOB_STATE_RUNNING in states, [e.kind for e in events]
    running = events[states.index(job_pb2.JOB_STATE_RUNNING)]
    assert states[states.index(job_pb2.JOB_STATE_RUNNING) + 1] == job_pb2.JOB_STATE_SUCCEEDED, states
    # Dated when Slurm started it (whole seconds there; never before the attempt was made), or, when
    # a poll happened to catch its second or so of running, by that poll (within one interval).
    started = running.time.ToDatetime().replace(tzinfo=UTC)
    late = started.timestamp() - float(str(record["start_time"]))
    assert int(started.timestamp()) == record["start_time"] or 0 <= late < POLL_S + 2, (started, record)
    assert started < events[-1].time.ToDatetime().replace(tzinfo=UTC)
    assert job.HasField("start_time") and job.start_time.ToDatetime() <= job.end_time.ToDatetime()
    assert datetime.fromtimestamp(float(str(record["start_time"])), UTC) <= started
