"""Failure blame (issue 10, observation 4): a job's own refused request never stops a site.

A job whose UserData is too large for EC2 goes on to its offers at other sites, and fails on its
own, with its reasons, when none is left; the AWS site's breaker stays closed and another
tenant's burst to it goes ahead. A refusal true of every job (ECS taking no UserData on the
site's image) is the site's instead: its breaker opens. The fault front
answers RunInstances the way EC2 documents (InvalidParameterValue, "User data is limited to
16384 bytes"); the first test lowers that limit so a spec passing the broker's own check
reaches the front, the second shows the broker's check stops an over-16 KB one before calling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TERMINAL, TOKEN, events, md, play_bootstrap_when_on, wait_state
from tests.clouds.test_broker_bursts import gpu_job, setup, user_data_of
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint, EcsFault
from tests.doubles.moto_front import MotoFront

OTHER = "token-sg-lab2-0123456789"


@pytest.fixture
def two_tenants(
    moto: MotoFront, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> Iterator[BrokerProcess]:
    ecs_server.handler = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    base = setup(moto.url, ecs_server.address)
    policy = base.policy.replace(
        "  - {id: sg-lab, kind: partner, entity_country: SG}\n",
        "  - {id: sg-lab, kind: partner, entity_country: SG}\n"
        "  - {id: sg-lab2, kind: partner, entity_country: SG}\n",
    )
    proc = start_broker(replace(base, policy=policy, tokens={**base.tokens, "sg-lab2": OTHER}))
    yield proc
    proc.stop()  # before the double forgets its instances
    ecs_server.handler = EcsCloud()


def big_job(name: str, env_bytes: int) -> job_pb2.JobSpec:
    msg = gpu_job(name, "A10G")
    msg.env["DATASET_MANIFEST"] = "x" * env_bytes
    return msg


def test_refused_user_data_fails_the_job_and_the_site_keeps_working(
    two_tenants: BrokerProcess, moto: MotoFront, ecs_server: EcsEndpoint
) -> None:
    assert isinstance(ecs_server.handler, EcsCloud)
    user_data = user_data_of((moto, ecs_server.handler))
    moto.scenario.user_data_limit = 13000  # a bootstrap is ~10 KB; the big job's is ~15 KB
    with grpc.insecure_channel(two_tenants.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=big_job("huge-env", 5000)), metadata=md()).job
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_FAILED
        assert "User data is limited to 13000 bytes" in final.message and "aws-east" in final.message
        # Refused at aws-east, it went on to its other offer (aws-west, the same limit), once each:
        # failed with both reasons when no offer was left.
        assert "aws-west" in final.message
        failed = [e for e in events(stub, job.id) if e.kind == "attempt_failed"]
        assert {e.data["error"] for e in failed} == {"RequestError"}
        assert sorted(e.data["site"] for e in failed) == ["aws-east", "aws-west"]
        assert moto.scenario.count("RunInstances") == 2  # not requeued to trip a site again
        status = stub.GetStatus(pb.GetStatusRequest(), metadata=md())
        assert not {"aws-east", "aws-west"} & set(status.unhealthy_sites)
        # Another tenant's burst to the same site goes ahead.
        other = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("small", "A10G")), metadata=md(OTHER)).job
        play_bootstrap_when_on(stub, two_tenants, other.id, "aws-east", user_data, token=OTHER)
        done = wait_state(stub, other.id, TERMINAL, token=OTHER)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED and done.site == "aws-east"


def test_user_data_over_16_kb_is_refused_before_calling_ec2(
    two_tenants: BrokerProcess, moto: MotoFront, ecs_server: EcsEndpoint
) -> None:
    assert isinstance(ecs_server.handler, EcsCloud)
    user_data = user_data_of((moto, ecs_server.handler))
    with grpc.insecure_channel(two_tenants.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=big_job("too-big", 12_000)), metadata=md()).job
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_FAILED
        assert "EC2 allows 16384" in final.message and "UserDataTooLarge" in final.message
        assert moto.scenario.count("RunInstances") == 0
        other = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("small", "A10G")), metadata=md(OTHER)).job
        play_bootstrap_when_on(stub, two_tenants, other.id, "aws-east", user_data, token=OTHER)
        assert wait_state(stub, other.id, TERMINAL, token=OTHER).site == "aws-east"


def test_refused_user_data_on_a_libcloud_site_fails_the_job_alone(
    two_tenants: BrokerProcess, moto: MotoFront, ecs_server: EcsEndpoint
) -> None:
    # lc-east is libcloud's EC2 driver on the same front: EC2's answer reaches the broker as a
    # libcloud error whose text carries the code and message, and must be blamed the same way.
    assert isinstance(ecs_server.handler, EcsCloud)
    user_data = user_data_of((moto, ecs_server.handler))
    moto.scenario.user_data_limit = 13000
    with grpc.insecure_channel(two_tenants.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = gpu_job("huge-env-lc", "T4")
        spec.env["DATASET_MANIFEST"] = "x" * 5000
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_FAILED, final.message
        assert "User data is limited to 13000 bytes" in final.message and "lc-east" in final.message
        failed = [e for e in events(stub, job.id) if e.kind == "attempt_failed"]
        assert len(failed) == 1 and failed[0].data["error"] == "RequestError"
        assert moto.scenario.count("RunInstances") == 1
        status = stub.GetStatus(pb.GetStatusRequest(), metadata=md())
        assert "lc-east" not in status.unhealthy_sites
        other = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("small-lc", "T4")), metadata=md(OTHER)).job
        play_bootstrap_when_on(stub, two_tenants, other.id, "lc-east", user_data, token=OTHER)
        done = wait_state(stub, other.id, TERMINAL, token=OTHER)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED and done.site == "lc-east"


def test_a_site_wide_user_data_refusal_takes_the_site_out_not_each_job(
    two_tenants: BrokerProcess, ecs_server: EcsEndpoint
) -> None:
    # ECS refuses UserData on an image/instance type that is not VPC and I/O optimised: the
    # site's own setting, true of every job, so it must open the breaker, not fail each job.
    cloud = ecs_server.handler
    assert isinstance(cloud, EcsCloud)
    cloud.faults.append(EcsFault("RunInstances", "InvalidUserData.NotSupported", message=(
        "The specified parameter UserData only support the vpc and IoOptimized Instance.")))
    before = len(ecs_server.requests)  # (the endpoint serves other tests of this worker too)
    with grpc.insecure_channel(two_tenants.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        first = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("a10-1", "A10")), metadata=md()).job
        deadline = time.monotonic() + 30
        while "aliyun-bj" not in stub.GetStatus(pb.GetStatusRequest(), metadata=md()).unhealthy_sites:
            assert time.monotonic() < deadline, "the site-wide refusal did not take aliyun-bj out"
            time.sleep(0.2)
        other = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("a10-2", "A10")), metadata=md(OTHER)).job
        time.sleep(2)
        for job_id, token in ((first.id, TOKEN), (other.id, OTHER)):
            job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md(token)).job
            assert job.state == job_pb2.JOB_STATE_QUEUED, job.message  # waits for the site, not failed
        calls = [r for r in ecs_server.requests[before:] if r.action == "RunInstances"]
        assert len(calls) == 1, calls  # the other tenant's job was not sent to be refused again


def test_a_job_too_big_for_one_cloud_goes_on_to_the_offer_that_takes_it(
    two_tenants: BrokerProcess, moto: MotoFront, ecs_server: EcsEndpoint
) -> None:
    # 20 KB of UserData: over EC2's 16 KB, within ECS's 32 KB. The AWS refusal (the broker's own
    # check) is this job's at AWS only: it goes on to aliyun-bj, and nothing else is blocked.
    with grpc.insecure_channel(two_tenants.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = gpu_job("mid-env", "A10G", "A10")
        spec.env["DATASET_MANIFEST"] = "x" * 20_000
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job
        deadline = time.monotonic() + 60
        while True:
            final = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job
            if final.state in TERMINAL or final.site == "aliyun-bj" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert final.state != job_pb2.JOB_STATE_FAILED, final.message
        assert final.site == "aliyun-bj", final.message
        assert moto.scenario.count("RunInstances") == 0
        assert [r for r in ecs_server.requests if r.action == "RunInstances"]
        failed = [e for e in events_so_far(stub, job.id) if e.kind == "attempt_failed"]
        assert failed and {e.data["error"] for e in failed} == {"RequestError"}
        assert {e.data["site"] for e in failed} <= {"aws-east", "aws-west"}
        unhealthy = stub.GetStatus(pb.GetStatusRequest(), metadata=md()).unhealthy_sites
        assert not {"aws-east", "aws-west"} & set(unhealthy)
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())


def test_a_job_refused_at_one_site_waits_for_its_other_offer_and_says_why(
    two_tenants: BrokerProcess, ecs_server: EcsEndpoint
) -> None:
    # Its other offer (aliyun-bj) is out of stock: the job waits for it, not FAILED, and
    # explain names the refusal that keeps it off AWS.
    cloud = ecs_server.handler
    assert isinstance(cloud, EcsCloud)
    cloud.faults.append(EcsFault("RunInstances", "OperationDenied.NoStock"))
    with grpc.insecure_channel(two_tenants.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = gpu_job("mid-env-2", "A10G", "A10")
        spec.env["DATASET_MANIFEST"] = "x" * 20_000
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job
        deadline = time.monotonic() + 30
        while not [r for r in ecs_server.requests if r.action == "RunInstances"]:
            assert time.monotonic() < deadline, "aliyun-bj was never tried"
            time.sleep(0.2)
        time.sleep(2)
        now = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job
        assert now.state == job_pb2.JOB_STATE_QUEUED, now.message
        said = str(stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=job.id), metadata=md()))
        assert "own request was refused" in said and "UserDataTooLarge" in said, said
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())


def events_so_far(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> list[job_pb2.JobEvent]:
    """A live job's events up to now (its stream stays open: read what came within a second)."""
    out: list[job_pb2.JobEvent] = []
    stream = stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=md(), timeout=2)
    try:
        for reply in stream:
            out.append(reply.event)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    return out
