"""A cloud API that stops answering (connections held, no reply) does not stall the broker: local
jobs still run, the silent sites are out of service with a reason, and all comes back when the
API answers again (szb serve, moto behind the fault front holding DescribeInstances)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import md, wait_state
from tests.clouds.test_broker_bursts import clouds, gpu_job, setup
from tests.clouds.test_cancel_mid_launch import eventually
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront, throttle_fault

__all__ = ["clouds"]

OPERATOR = "operator-token-hung-0123456789"
SILENT = ("aws-east", "aws-west", "lc-east")
"""The sites on moto: each lists its instances with DescribeInstances."""


def local_job(name: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", "print('ran')"],
        runtime_estimate=duration_pb2.Duration(seconds=60),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A800"])),
    )


def test_a_cloud_that_stops_answering_stalls_neither_local_jobs_nor_the_broker(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    moto, _ = clouds
    base = setup(moto.url, ecs_server.address)
    proc = start_broker(
        replace(base, dispatch=base.dispatch + ", backend_wait_s: 1.0", operators={"sg-lab": OPERATOR})
    )
    gate = threading.Event()
    with grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        cloud = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("on-aws", "A10G")), metadata=md()).job
        wait_state(stub, cloud.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
        try:
            # From here every DescribeInstances (status polls and listings) is held unanswered,
            # longer than boto3's read timeout (30 s) and the wait below.
            held = moto.scenario.count("DescribeInstances")
            moto.scenario.hold_before = {"DescribeInstances": gate}
            eventually(lambda: moto.scenario.count("DescribeInstances") > held, "no DescribeInstances held")
            job = stub.SubmitJob(pb.SubmitJobRequest(job=local_job("at-home")), metadata=md()).job
            ended = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED}
            done = wait_state(stub, job.id, ended, timeout=20)  # boto3 alone would hold a poll 30 s
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.message
            assert done.site == "onprem"

            def silent() -> dict[str, str]:  # as an operator sees it (a tenant sees "unavailable")
                status = stub.GetStatus(pb.GetStatusRequest(), metadata=md(OPERATOR))
                return {s: r for s, r in status.unhealthy_sites.items() if s in SILENT}

            eventually(lambda: set(silent()) == set(SILENT), "the silent sites stayed in service")
            assert all("did not answer" in r or "has not answered" in r for r in silent().values()), silent()
            # A job only those sites can run waits for them meanwhile.
            waiting = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("waits", "A10G")), metadata=md()).job
            time.sleep(1)
            state = stub.GetJob(pb.GetJobRequest(id=waiting.id), metadata=md()).job.state
            assert state == job_pb2.JOB_STATE_QUEUED, state
        finally:
            gate.set()
            moto.scenario.hold_before = {}
        # Answers again: back in service, and the cloud job was followed throughout (not lost).
        eventually(lambda: not silent(), "the sites stayed out of service once the API answered")
        # The waiting job is decided as the sites come back (review: at the next full scan, 15 s on).
        wait_state(stub, waiting.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}, timeout=8)
        after = stub.GetJob(pb.GetJobRequest(id=cloud.id), metadata=md()).job
        assert after.state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING), after.message


def test_a_site_whose_status_calls_fail_is_polled_less_and_said_once(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """Review: with a backend refusing status calls, each poll of each attempt (every 0.2 s here)
    logged a line and called again at once: the log buried, the recovering backend hammered."""
    moto, _ = clouds
    proc = start_broker(setup(moto.url, ecs_server.address))
    with grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        jobs = [
            stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job(f"on-aws-{n}", "A10G")), metadata=md()).job
            for n in range(3)
        ]
        for job in jobs:
            wait_state(stub, job.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
        moto.scenario.faults = [throttle_fault("DescribeInstances")]  # every status call refused
        time.sleep(8)
        moto.scenario.faults = []
        eventually(lambda: "status polls of aws-east answer again" in "".join(proc.output), "never said")
        for job in jobs:  # followed throughout, not lost
            state = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job.state
            assert state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING)
    text = "".join(proc.output)
    assert text.count("status polls of aws-east fail") == 1, text[-3000:]
    assert "unavailable: aws-east" not in text and not [ln for ln in text.splitlines() if "status of " in ln]
