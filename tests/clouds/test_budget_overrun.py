"""A burst running past its estimate counts what it has cost so far against the budget, not only
its reservation (szb serve, Alibaba on the ECS double)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

UP: set[int] = {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}
A10 = "ecs.gn7i-c8g1.2xlarge"
PRICE = 3600.0  # CNY per hour: 1 CNY a second
BUDGET = 10.0


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:
    cloud = EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    yield cloud
    ecs_server.handler = EcsCloud()


def start(start_broker: StartBroker, ecs_server: EcsEndpoint) -> BrokerProcess:
    policy = (
        on_moto.POLICY_HEAD
        + on_moto.ONPREM_A800
        + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
        + f"""\
tenants:
  - {{id: ot, kind: sme, entity_country: CN, monthly_budget: {BUDGET}}}
burst:
  heartbeat_timeout: 1h
"""
        + on_moto.CN_RESIDENCY
    )
    return start_broker(
        on_moto.BrokerSetup(
            policy,
            tokens={"ot": TOKEN},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs={
                "ali.csv": on_moto.catalog(
                    f"{A10},A10,1,8,30,{PRICE},,cn-beijing,cn-beijing-i,CNY", currency=True
                )
            },
        )
    )


def a10_job(name: str, runtime_s: int) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=runtime_s),
        max_wait=duration_pb2.Duration(seconds=0),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10"])),
    )


def test_a_burst_past_its_estimate_counts_its_cost_so_far_against_the_budget(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start(start_broker, ecs_server)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        # Estimated at 1 s (1 CNY reserved); its instance stays up and keeps billing.
        long = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("long", 1)), metadata=md()).job
        wait_state(stub, long.id, UP)
        deadline = time.monotonic() + 30
        while True:
            cost = stub.GetJob(pb.GetJobRequest(id=long.id), metadata=md()).job.cost_so_far
            left = stub.GetSpend(pb.GetSpendRequest(), metadata=md()).budget_left
            if cost >= 8 and left <= BUDGET - 7:
                break  # what it has run is counted (to within a poll)
            assert time.monotonic() < deadline, (
                f"the burst has cost {cost:.2f} CNY so far, yet {left:.2f} of the {BUDGET} budget is left"
            )
            time.sleep(0.5)
        # 5 CNY more would take the month past its budget: the job waits, saying why.
        more = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("more", 5)), metadata=md()).job
        deadline = time.monotonic() + 20
        while "budget" not in (job := stub.GetJob(pb.GetJobRequest(id=more.id), metadata=md()).job).message:
            assert job.state == job_pb2.JOB_STATE_QUEUED, job
            assert time.monotonic() < deadline, job.message
            time.sleep(0.2)
        assert len(ecs.instances) == 1
