"""ECS refusals of RunInstances that its API reference documents beyond the reference's summary
(review of issues 4 and 6): "QuotaExceeded" (living instances quota in the VPC) is a quota of
the region, not an unknown code that costs the job one attempt per offer there. szb serve, the
ECS double in two regions, the real tea-openapi SDK."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import ECS_KEYS, StartBroker
from tests.clouds.e2e_helpers import TERMINAL, TOKEN, ecs_user_data, md, play_bootstrap_when_on, wait_state
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint, EcsFault

BJ_ZONES = ("cn-beijing-h", "cn-beijing-i", "cn-beijing-j")
POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY")
    + on_moto.cloud_site("ali-sh", "alibaba", "cn-shanghai", "ali-sh.csv", currency="CNY")
    + """\
tenants:
  - {id: lab, kind: partner, entity_country: SG}
burst:
  retries: {max_attempts: 3}
  heartbeat_timeout: 1h
"""
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def clouds(ecs_server: EcsEndpoint) -> Iterator[tuple[EcsCloud, EcsCloud, EcsEndpoint]]:
    bj = EcsCloud(instance_types=(on_moto.A10,), zones=BJ_ZONES)
    sh = EcsCloud(instance_types=(on_moto.A10,), zones=("cn-shanghai-b",))
    ecs_server.handler = bj
    ecs_server.requests.clear()
    second = EcsEndpoint.start(credentials=ECS_KEYS)
    second.handler = sh
    yield bj, sh, second
    second.stop()
    ecs_server.handler = EcsCloud()


@pytest.fixture
def broker(
    ecs_server: EcsEndpoint, clouds: tuple[EcsCloud, EcsCloud, EcsEndpoint], start_broker: StartBroker
) -> BrokerProcess:
    rows = [f"{on_moto.A10},A10,1,8,30,{13.9 + i / 10:.2f},,cn-beijing,{z}" for i, z in enumerate(BJ_ZONES)]
    setup = on_moto.BrokerSetup(
        POLICY,
        tokens={"lab": TOKEN},
        sites={
            "ali-bj": on_moto.ecs_double(ecs_server.address),
            "ali-sh": on_moto.ecs_double(clouds[2].address),
        },
        catalogs={
            "ali-bj.csv": on_moto.catalog(*rows),
            "ali-sh.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,14.50,,cn-shanghai,cn-shanghai-b"),
        },
        dispatch="poll_interval_s: 0.2",
    )
    return start_broker(setup)


def test_a_vpc_instance_quota_blocks_the_region_and_the_job_runs_in_the_next(
    broker: BrokerProcess, ecs_server: EcsEndpoint, clouds: tuple[EcsCloud, EcsCloud, EcsEndpoint]
) -> None:
    bj, sh, _ = clouds
    # ECS RunInstances API reference: 400 QuotaExceeded "Living instances quota exceeded in this VPC."
    said = "Living instances quota exceeded in this VPC."
    bj.faults = [EcsFault("RunInstances", "QuotaExceeded", 400, said)]
    spec = job_pb2.JobSpec(
        name="quota", command=["python3", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=3600), max_wait=duration_pb2.Duration(seconds=0),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10"])),
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job.id
        user_data = ecs_user_data([bj.user_data, sh.user_data])
        play_bootstrap_when_on(stub, broker, job_id, "ali-sh", user_data, timeout=60)
        final = wait_state(stub, job_id, TERMINAL)
    calls = [r for r in ecs_server.requests if r.action == "RunInstances"]
    # Before: each of Beijing's three zones was tried (one attempt each, max_attempts 3), and the
    # job FAILED with Shanghai untried.
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "ali-sh", final.message
    assert len(calls) == 1, f"Beijing's quota-refused RunInstances was called {len(calls)} times"
