"""Two brokers left at their default settings on one cloud account (staging beside production,
each with its own data dir) leave each other's instances alone. Every store's broker once tagged
its instances `szb:broker=shangzhuang`, so each took the other's for orphans and terminated them
within a reconcile pass (issue 4: no leaked instances, and none killed)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds.e2e_helpers import md, wait_state
from tests.clouds.test_broker_bursts import clouds, gpu_job, setup
from tests.clouds.test_cancel_mid_launch import live
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront

__all__ = ["clouds"]


def test_a_second_broker_on_the_account_leaves_the_first_ones_instances_alone(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, tmp_path: Path
) -> None:
    moto, _ = clouds
    first = BrokerProcess(setup(moto.url, ecs_server.address).write(tmp_path / "production"))
    second = BrokerProcess(setup(moto.url, ecs_server.address).write(tmp_path / "staging"))
    first.start()
    try:
        with grpc.insecure_channel(first.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("prod", "A10G")), metadata=md()).job
            wait_state(stub, job.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
            deadline = time.monotonic() + 30
            while not live(moto, job.id):
                assert time.monotonic() < deadline, "the first broker's job never launched"
                time.sleep(0.2)
            second.start()
            time.sleep(4)  # several of the second broker's reconcile passes (every second here)
            assert live(moto, job.id), "the second broker terminated the first one's instance"
            got = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job
            assert got.state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING), got.message
            assert first.broker_id() != second.broker_id()
            assert not [line for line in second.output if "orphan" in line], "".join(second.output)[-2000:]
            stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())
    finally:
        second.stop()
        first.stop()
