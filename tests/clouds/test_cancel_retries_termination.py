"""A cancelled job's instance is terminated even when the cloud refuses the first terminate
call (a throttled TerminateInstances): the broker keeps at it rather than leaving the instance to
run the job to its end, billed (szb serve, AWS on moto behind the fault front)."""

from __future__ import annotations

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds.e2e_helpers import md
from tests.clouds.test_broker_bursts import broker, clouds, gpu_job
from tests.clouds.test_cancel_mid_launch import attempts_of, eventually, live
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront, throttle_fault

__all__ = ["broker", "clouds"]


def test_a_cancel_whose_terminate_call_is_throttled_still_terminates_the_instance(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("cancel-throttled", "A10G")), metadata=md()).job
        eventually(lambda: any(a.backend_id for a in attempts_of(broker, job.id)), "never launched")
        moto.scenario.faults = [throttle_fault("TerminateInstances", times=1)]
        cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md()).job
        assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
        # The heartbeat timeout is an hour: only the broker trying again ends the instance.
        eventually(lambda: not live(moto, job.id), "the cancelled job's instance was left running")
        eventually(lambda: attempts_of(broker, job.id)[-1].state.terminal, "the attempt never ended")
    assert moto.scenario.count("TerminateInstances") >= 2


def test_a_cancelled_jobs_instance_left_running_over_a_broker_restart_is_terminated(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("cancel-restart", "A10G")), metadata=md()).job
        eventually(lambda: any(a.backend_id for a in attempts_of(broker, job.id)), "never launched")
        moto.scenario.faults = [throttle_fault("TerminateInstances")]  # every stop refused for now
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())
        eventually(
            lambda: moto.scenario.count("TerminateInstances") >= 1, "the cancel never called the cloud"
        )
    broker.kill()
    moto.scenario.faults = []
    broker.restart()
    eventually(lambda: not live(moto, job.id), "the cancelled job's instance was left running")
    eventually(lambda: attempts_of(broker, job.id)[-1].state.terminal, "the attempt never ended")
