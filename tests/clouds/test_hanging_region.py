"""A region that hangs on RunInstances, or keeps throttling it past the launch's retries, does not
stall the failover chain (issue 4: each provisioning attempt has its own timeout; a hanging
region must not stall the chain, as it did for SkyPilot users). szb serve, the ECS double in two
regions, the real tea-openapi SDK."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import Regions, StartBroker
from tests.clouds.e2e_helpers import (
    TERMINAL,
    TOKEN,
    ecs_user_data,
    events,
    md,
    play_bootstrap_when_on,
    wait_state,
)
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint, EcsFault, EcsRequest, Reply

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY")
    + on_moto.cloud_site("ali-sh", "alibaba", "cn-shanghai", "ali-sh.csv", currency="CNY")
    + """\
tenants:
  - {id: lab, kind: partner, entity_country: SG}
burst:
  retries: {max_transient_retries: 2, backoff_initial: 0.05s, backoff_max: 0.2s}
  attempt_timeout: 2s
  heartbeat_timeout: 1h
"""
    + on_moto.CN_RESIDENCY
)


class Hanging:
    """An ECS region whose RunInstances never answers until `gate` opens (the rest answers)."""

    def __init__(self, cloud: EcsCloud) -> None:
        self.cloud = cloud
        self.gate = threading.Event()
        self.held = 0

    def __call__(self, req: EcsRequest) -> Reply:
        if req.action == "RunInstances":
            self.held += 1
            self.gate.wait(timeout=60)
        return self.cloud(req)


@pytest.fixture
def broker(ecs_server: EcsEndpoint, regions: Regions, start_broker: StartBroker) -> BrokerProcess:
    setup = on_moto.BrokerSetup(
        POLICY,
        tokens={"lab": TOKEN},
        sites={
            "ali-bj": on_moto.ecs_double(ecs_server.address),
            "ali-sh": on_moto.ecs_double(regions[2].address),
        },
        catalogs={
            "ali-bj.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,13.90,,cn-beijing,cn-beijing-i"),
            "ali-sh.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,14.50,,cn-shanghai,cn-shanghai-b"),
        },
        dispatch="poll_interval_s: 0.2",
    )
    return start_broker(setup)


def job(name: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        max_wait=duration_pb2.Duration(seconds=0),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10"])),
    )


def test_a_hanging_region_times_out_once_and_the_job_moves_to_the_next_region(
    broker: BrokerProcess, ecs_server: EcsEndpoint, regions: Regions, tmp_path: Path
) -> None:
    bj, sh, _ = regions
    hanging = Hanging(bj)
    ecs_server.handler = hanging
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=job("hang")), metadata=md()).job.id
            user_data = ecs_user_data([bj.user_data, sh.user_data])
            play_bootstrap_when_on(stub, broker, job_id, "ali-sh", user_data, timeout=60)
            final = wait_state(stub, job_id, TERMINAL)
            found = events(stub, job_id)
    finally:
        hanging.gate.set()
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "ali-sh", final.message
    # Beijing is cheaper, but once its launch timed out the job goes on to Shanghai rather than
    # waiting out the timeout there again (the default attempt_timeout is 20 minutes).
    assert hanging.held == 1, f"Beijing's hanging RunInstances was tried {hanging.held} times"
    [failed] = [e for e in found if e.kind == "attempt_failed"]
    assert "AttemptTimeout" in failed.message and "avoid_region_try_next" in failed.message, failed.message
    # explain says why Beijing is out for now, naming what happened there.
    path = tmp_path / "next.yaml"
    path.write_text(
        "name: next\ncommand: [python3, train.py]\nruntime_estimate: 1h\nmax_wait: 0s\n"
        "resources:\n  accelerators: {count: 1, any_of: [A10]}\n"
    )
    table = szb(broker, TOKEN, "explain", str(path)).stdout
    assert "region cn-beijing of ali-bj is blocked after" in table and "timed out" in table, table


def test_a_region_throttling_past_the_launch_retries_is_left_for_the_next_region(
    broker: BrokerProcess, ecs_server: EcsEndpoint, regions: Regions
) -> None:
    bj, sh, _ = regions
    bj.faults = [
        EcsFault("RunInstances", "Throttling.User", 400, "Request was denied due to user flow control.")
    ]
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=job("throttled")), metadata=md()).job.id
        user_data = ecs_user_data([bj.user_data, sh.user_data])
        play_bootstrap_when_on(stub, broker, job_id, "ali-sh", user_data, timeout=60)
        final = wait_state(stub, job_id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "ali-sh", final.message
    # One attempt's calls in Beijing (the first and max_transient_retries: 2 more), not one
    # attempt after another there until the breaker opens or the job runs out of attempts.
    calls = [r for r in ecs_server.requests if r.action == "RunInstances" and job_id in r.params.values()]
    assert len(calls) == 3, f"Beijing's throttled RunInstances was called {len(calls)} times"
    assert final.attempts == 2, final.attempts


def test_an_error_code_no_table_names_sends_the_next_attempt_to_another_offer(
    broker: BrokerProcess, ecs_server: EcsEndpoint, regions: Regions
) -> None:
    # (A code the broker's tables do not name; each of the three attempts went to Beijing's one
    # offer, until the job gave up or the site's breaker opened.)
    bj, sh, _ = regions
    bj.faults = [EcsFault("RunInstances", "SomeNewCode.NobodyMapped", 400, "A new refusal.")]
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=job("unmapped")), metadata=md()).job.id
        user_data = ecs_user_data([bj.user_data, sh.user_data])
        play_bootstrap_when_on(stub, broker, job_id, "ali-sh", user_data, timeout=60)
        final = wait_state(stub, job_id, TERMINAL)
        found = events(stub, job_id)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "ali-sh", final.message
    assert final.attempts == 2, final.attempts
    [failed] = [e for e in found if e.kind == "attempt_failed"]
    assert "SomeNewCode.NobodyMapped" in failed.message, failed.message
