"""What a client of the crash tests does over gRPC: submit, read, wait, read events."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.crash.world import TOKEN
from tests.job_events import Events, events_until

MD = (("authorization", f"Bearer {TOKEN}"),)
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
Stub = broker_service_pb2_grpc.BrokerServiceStub


def job_spec(name: str, accel: str, command: list[str], *, max_wait_s: int = 60) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=command,
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        max_wait=duration_pb2.Duration(seconds=max_wait_s),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=[accel])),
    )


def submit(stub: Stub, spec: job_pb2.JobSpec, client_id: str = "") -> job_pb2.Job:
    return stub.SubmitJob(pb.SubmitJobRequest(job=spec, client_id=client_id), metadata=MD, timeout=10).job


def get(stub: Stub, job_id: str) -> job_pb2.Job:
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=MD, timeout=10).job


def wait_state(stub: Stub, job_id: str, states: set[int], timeout: float = 30) -> job_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = get(stub, job_id)
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{job_id} stuck in state {job.state}: {job.message}")
        time.sleep(0.1)


def events(stub: Stub, job_id: str, until: Callable[[Events], bool] | None = None) -> list[job_pb2.JobEvent]:
    """The job's events so far (the stream is cut after a moment if the job is still live); given
    `until`, read until those events have arrived (a loaded broker may send them late)."""
    if until is not None:
        return events_until(stub, job_id, MD, until)
    out = []
    try:
        for resp in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=MD, timeout=1.0):
            out.append(resp.event)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return out
