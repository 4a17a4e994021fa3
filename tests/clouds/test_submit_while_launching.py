"""Submits are answered while the dispatcher is inside a launch a slow cloud holds back: the
submit path never waits on the decision loop (moto answers RunInstances 20 s late)."""

from __future__ import annotations

import time

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds.e2e_helpers import live_attempt, md
from tests.clouds.test_broker_bursts import broker, clouds, gpu_job
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront, Scenario

__all__ = ["broker", "clouds"]

HELD_S = 20.0


def test_submits_are_answered_while_a_launch_is_held(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    moto.scenario = Scenario(delay_after={"RunInstances": HELD_S})
    data = broker.config.parent / "data"
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        first = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("held", "A10G")), metadata=md()).job
        deadline = time.monotonic() + 15
        while moto.scenario.count("RunInstances") == 0:
            assert time.monotonic() < deadline, "the dispatcher never called RunInstances"
            time.sleep(0.05)
        # The cloud holds its answer: the first job's attempt has no instance id yet.
        single = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("meanwhile", "A10G")), metadata=md())
        batch = stub.SubmitJobs(
            pb.SubmitJobsRequest(
                requests=[pb.SubmitJobRequest(job=gpu_job(f"meanwhile-{i}", "A10G")) for i in range(20)]
            ),
            metadata=md(),
        )
        held = live_attempt(data, first.id)[2]
        assert held is None, "the submits were answered only after the held launch returned"
        answered = [single, *batch.responses]
        assert all(a.created and a.job.state == job_pb2.JOB_STATE_QUEUED for a in answered)
        for a in answered:  # stored, and readable through the API at once
            assert stub.GetJob(pb.GetJobRequest(id=a.job.id), metadata=md()).job.id == a.job.id
        moto.scenario.delay_after.clear()
