"""The give-up deadline bounds how long the broker tries to start a job, not how long the job
may live: a job that ran past `burst.give_up_after` and was then preempted waits for its next
attempt like any other (szb serve, the ECS double, the real tea-openapi SDK)."""

from __future__ import annotations

import time

import grpc
import pytest

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import (
    TERMINAL,
    TOKEN,
    agent_secret_of,
    ecs_user_data,
    events,
    live_attempt,
    md,
    play_bootstrap,
    wait_state,
)
from tests.clouds.test_spot_alibaba import launched, spot_job
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

GIVE_UP_S = 2

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY", spot=True)
    + f"""\
tenants:
  - {{id: lab, kind: partner, entity_country: SG}}
burst:
  sites:
    ali-bj: {{spot_interruption_risk: 0.05, provisioning_p95: 60s}}
  blocklist_ttl: {{capacity: 4s}}
  heartbeat_timeout: 1h
  give_up_after: {GIVE_UP_S}s
"""
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def bj(ecs_server: EcsEndpoint) -> EcsCloud:
    cloud = EcsCloud(instance_types=(on_moto.A10,), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    return cloud


@pytest.fixture
def broker(ecs_server: EcsEndpoint, bj: EcsCloud, start_broker: StartBroker) -> BrokerProcess:
    setup = on_moto.BrokerSetup(
        POLICY,
        tokens={"lab": TOKEN},
        sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
        catalogs={
            "ali-bj.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,13.90,4.00,cn-beijing,cn-beijing-i"),
        },
        dispatch="poll_interval_s: 0.2",
    )
    return start_broker(setup)


def heartbeat(broker: BrokerProcess, job_id: str, script: str, channel: grpc.Channel) -> None:
    """The instance's bootstrap says the job runs (as its UserData script would)."""
    attempt_id, _, _ = live_attempt(broker.config.parent / "data", job_id)
    agent = agent_service_pb2_grpc.AgentServiceStub(channel)
    request = agent_service_pb2.HeartbeatRequest(
        attempt_id=attempt_id, token=agent_secret_of(script), running=True
    )
    agent.Heartbeat(request)


def test_a_job_preempted_after_running_past_the_give_up_time_waits_and_runs_again(
    broker: BrokerProcess, bj: EcsCloud
) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spot_job("long-run")), metadata=md()).job.id
        [first] = launched(bj, job_id)
        user_data = ecs_user_data([bj.user_data])
        heartbeat(broker, job_id, user_data(first), channel)
        wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING})
        time.sleep(GIVE_UP_S + 1)  # the job has run longer than give_up_after when ECS reclaims it
        bj.interrupt_spot(first)
        # Beijing is blocked a while after the interruption: the job waits, then runs again.
        deadline = time.monotonic() + 30
        while len(launched(bj, job_id)) < 2:
            job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job
            assert job.state not in TERMINAL, f"{job_pb2.JobState.Name(job.state)}: {job.message}"
            assert time.monotonic() < deadline, job.message
            time.sleep(0.1)
        bj.release(first)
        play_bootstrap(broker, job_id, user_data)
        final = wait_state(stub, job_id, TERMINAL)
        kinds = [e.kind for e in events(stub, job_id)]
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
    assert "gave_up" not in kinds, kinds


def test_a_job_that_never_starts_still_gives_up_after_its_submission(
    broker: BrokerProcess, bj: EcsCloud
) -> None:
    bj.sold_out = {("cn-beijing-i", on_moto.A10)}  # every launch: OperationDenied.NoStock
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spot_job("no-stock")), metadata=md()).job.id
        final = wait_state(stub, job_id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_FAILED, final.message
    message = final.message
    assert message.startswith("gave up: not started") and "after submission" in message, message
