"""An instance the broker is done with is terminated even where the account may not tag it
separately, and a site that refuses to terminate takes no new work, saying why (issue 4: no
leaked instances). szb serve, AWS on moto behind the fault front."""

from __future__ import annotations

import json
import time

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds.e2e_helpers import TERMINAL, events, md, play_bootstrap, wait_state
from tests.clouds.test_broker_bursts import broker, clouds, gpu_job, user_data_of
from tests.clouds.test_cancel_mid_launch import eventually, live
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import AwsFault, MotoFront

__all__ = ["broker", "clouds"]

DENIED = "You are not authorized to perform this operation."


def _run_to_success(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud], stub: broker_service_pb2_grpc.BrokerServiceStub
) -> job_pb2.Job:
    job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("denied", "A10G")), metadata=md()).job
    wait_state(stub, job.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
    play_bootstrap(broker, job.id, user_data_of(clouds))
    final = wait_state(stub, job.id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == "aws-east", final.message
    return final


def test_an_account_that_may_not_tag_outside_run_instances_still_terminates(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    # (IAM policies often allow ec2:CreateTags only with ec2:CreateAction=RunInstances: the
    # refused "cancelled" mark kept TerminateInstances from ever being sent.)
    moto, _ = clouds
    moto.scenario.faults = [AwsFault("CreateTags", "UnauthorizedOperation", 403, DENIED)]
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = _run_to_success(broker, clouds, stub)
        eventually(lambda: not live(moto, job.id), "the finished job's instance was left running")
        eventually(lambda: "terminated" in [e.kind for e in events(stub, job.id)], "no terminated event")


def test_a_site_that_refuses_to_terminate_takes_no_new_work_and_says_why(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    moto.scenario.faults = [AwsFault("TerminateInstances", "UnauthorizedOperation", 403, DENIED)]
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = _run_to_success(broker, clouds, stub)
        eventually(lambda: "terminate_failed" in [e.kind for e in events(stub, job.id)], "no event says so")
        [failed] = [e for e in events(stub, job.id) if e.kind == "terminate_failed"]
        assert "UnauthorizedOperation" in failed.message, failed.message
        unhealthy = json.loads(stub.GetStatus(pb.GetStatusRequest(), metadata=md()).status_json)["unhealthy"]
        assert unhealthy.get("aws-east", "").startswith("cannot terminate its instances"), unhealthy
        # New work goes elsewhere while every instance started here would be left running.
        other = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("next", "A10G", "A10")), metadata=md()).job
        other = wait_state(stub, other.id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
        assert other.site not in ("", "aws-east"), other.site  # (aws-east is the cheapest A10G)
        # Once the cloud takes the terminate again (the reconciler keeps trying), the site is back.
        moto.scenario.faults = []
        eventually(lambda: not live(moto, job.id), "the instance was never terminated")
        deadline = time.monotonic() + 30
        while "aws-east" in json.loads(stub.GetStatus(pb.GetStatusRequest(), metadata=md()).status_json)[
            "unhealthy"
        ]:
            assert time.monotonic() < deadline, "aws-east stayed out after its terminate went through"
            time.sleep(0.2)
