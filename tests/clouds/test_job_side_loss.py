"""An instance its own job shut down is lost on the job, not on the offer or the route.

Found by a held-out review of issue 10: a job that ran `poweroff` stopped its instance before it
reported; the broker recorded it LOST, blocked the offer for every tenant for the capacity TTL
and counted it toward the route's failure throttle. EC2 says who stopped an instance
(`Client.InstanceInitiatedShutdown`: from inside; `Client.UserInitiatedShutdown`: an API call,
not the broker's, which tags what it ends). szb serve, moto's EC2 and the ECS double.
"""

from __future__ import annotations

import time
from dataclasses import replace

import grpc
import pytest
from moto.ec2.models.instances import StateReason

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import live_attempt, md
from tests.clouds.test_broker_bursts import clouds, events_so_far, gpu_job, setup, user_data_of
from tests.clouds.test_give_up_after_a_run import heartbeat
from tests.clouds.test_lost_after_launch import _meddle, _wait_for_second_attempt
from tests.doubles.ecs_endpoint import EcsEndpoint
from tests.doubles.moto_front import MotoFront

__all__ = ["clouds"]


@pytest.mark.parametrize("reason", ["Client.InstanceInitiatedShutdown", "Client.UserInitiatedShutdown"])
def test_an_instance_its_job_shut_down_leaves_the_offer_open(
    reason: str, clouds: tuple[MotoFront, object], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    moto = clouds[0]
    proc = start_broker(setup(moto.url, ecs_server.address))
    ended: set[str] = set()

    def power_off_once(inst: object) -> None:
        state = inst._state  # type: ignore[attr-defined]
        if ended or state.name != "running":
            return
        state.name, state.code = "stopped", 80
        inst.state_reason = StateReason(f"{reason}: shutdown", reason)  # type: ignore[attr-defined]
        ended.add(inst.id)  # type: ignore[attr-defined]

    stop = _meddle(power_off_once)
    try:
        channel = grpc.insecure_channel(proc.address)
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("poweroff", "A10G", "A10")), metadata=md()).job
        offers = _wait_for_second_attempt(stub, job.id, timeout=60)
        # The offer is not blocked: the next attempt (one of the job's) goes to the same one,
        # and so would any other tenant's job.
        assert offers[1] == offers[0], offers
        assert offers[0].startswith("aws-east/"), offers
        lost = [e.message for e in events_so_far(stub, job.id) if e.kind == "lost"]
        assert lost and reason in lost[0] and "job-side" in lost[0], lost
        view = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job
        assert view.attempts == 2, view
        channel.close()
    finally:
        stop.set()


def test_an_agent_gone_silent_while_its_instance_runs_leaves_the_offer_open(
    clouds: tuple[MotoFront, object], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """The job killed its agent (it was heard, then nothing, the instance running): lost on the job."""
    moto = clouds[0]
    base = setup(moto.url, ecs_server.address)
    policy = base.policy.replace("heartbeat_timeout: 1h", "heartbeat_timeout: 4s")
    proc = start_broker(replace(base, policy=policy))
    with grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("agentkill", "A10G", "A10")), metadata=md()).job
        data_dir = proc.config.parent / "data"
        deadline = time.monotonic() + 20
        backend = None
        while backend is None:
            assert time.monotonic() < deadline, "no backend id recorded"
            time.sleep(0.05)
            try:
                backend = live_attempt(data_dir, job.id)[2]
            except IndexError:  # (no attempt yet)
                continue
        heartbeat(proc, job.id, user_data_of(clouds)(backend), channel)  # then the job kills its agent
        offers = _wait_for_second_attempt(stub, job.id, timeout=60)
        assert offers[1] == offers[0] and offers[0].startswith("aws-east/"), offers
        lost = [e.message for e in events_so_far(stub, job.id) if e.kind == "lost"]
        assert lost and "job-side" in lost[0] and "no heartbeat" in lost[0], lost
