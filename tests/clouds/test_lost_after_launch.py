"""A launch the cloud accepted but never ran is not retried on the same offer for ever.

Found by a held-out review of issue 4: an EC2 instance held in `pending` kept its job in
PROVISIONING (the attempt timeout bounded only the RunInstances call, the heartbeat check only a
running instance); and an instance EC2 accepted, then terminated with
`Server.InsufficientInstanceCapacity` (a zone that could not place it) was LOST and requeued onto
the same zone five times until the job failed, with other regions and clouds free. szb serve,
moto's EC2 and the ECS double.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import md
from tests.clouds.test_broker_bursts import clouds, ec2_instances, events_so_far, gpu_job, setup
from tests.doubles.ecs_endpoint import EcsEndpoint
from tests.doubles.moto_front import MotoFront

__all__ = ["clouds"]

EAST = "us-east-1"


def _east_instances() -> Iterator[object]:
    for reservation in list(ec2_backends[DEFAULT_ACCOUNT_ID][EAST].reservations.values()):
        yield from reservation.instances


def _meddle(change: object) -> threading.Event:
    """Run `change` on every us-east-1 instance, every 50 ms, until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for inst in _east_instances():
                change(inst)  # type: ignore[operator]
            time.sleep(0.05)

    threading.Thread(target=loop, daemon=True).start()
    return stop


def _attempt_offers(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> list[str]:
    return [e.data["offer"] for e in events_so_far(stub, job_id) if e.kind == "attempt"]


def _wait_for_second_attempt(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, timeout: float
) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        offers = _attempt_offers(stub, job_id)
        if len(offers) >= 2:
            return offers
        time.sleep(0.5)
    job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job
    raise AssertionError(f"no second attempt in {timeout}s: {job.state} {job.message}")


def test_an_instance_that_never_leaves_pending_is_lost_and_its_job_moves_on(
    clouds: tuple[MotoFront, object], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    moto = clouds[0]
    base = setup(moto.url, ecs_server.address)
    policy = base.policy.replace("heartbeat_timeout: 1h", "heartbeat_timeout: 1h\n  attempt_timeout: 4s")
    assert policy != base.policy
    proc = start_broker(replace(base, policy=policy))

    def hold_pending(inst: object) -> None:
        state = inst._state  # type: ignore[attr-defined]
        if state.name == "running":
            state.name, state.code = "pending", 0

    stop = _meddle(hold_pending)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("stuck", "A10G", "A10")), metadata=md()).job
            offers = _wait_for_second_attempt(stub, job.id, timeout=60)
            assert offers[0].startswith(f"aws-east/{EAST}"), offers
            # The hung region is avoided: the next attempt goes to another region or cloud.
            assert not offers[1].startswith(f"aws-east/{EAST}"), offers
            lost = [e.message for e in events_so_far(stub, job.id) if e.kind == "lost"]
            assert lost and "never came up" in lost[0] and "attempt_timeout" in lost[0], lost
            # Its instance is not left pending (and billed) behind it.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = {str(i["State"]["Name"]) for i in ec2_instances(moto, EAST, job.id)}  # type: ignore[index]
                if states <= {"terminated", "shutting-down"}:
                    break
                time.sleep(0.5)
            assert states <= {"terminated", "shutting-down"}, states
    finally:
        stop.set()


@pytest.mark.parametrize("reason", ["Server.InsufficientInstanceCapacity", "Server.InternalError"])
def test_an_instance_the_cloud_ends_at_boot_sends_the_next_attempt_to_another_offer(
    reason: str,
    clouds: tuple[MotoFront, object],
    ecs_server: EcsEndpoint,
    start_broker: StartBroker,
) -> None:
    moto = clouds[0]
    proc = start_broker(setup(moto.url, ecs_server.address))
    ended: set[str] = set()

    def end_at_boot(inst: object) -> None:
        state = inst._state  # type: ignore[attr-defined]
        if inst.id in ended or state.name != "running":  # type: ignore[attr-defined]
            return
        state.name, state.code = "terminated", 48
        inst.state_reason = StateReason(f"{reason}: the launch could not be completed.", reason)  # type: ignore[attr-defined]
        ended.add(inst.id)  # type: ignore[attr-defined]

    stop = _meddle(end_at_boot)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            request = pb.SubmitJobRequest(job=gpu_job("bootdie", "A10G", "A10"))
            job = stub.SubmitJob(request, metadata=md()).job
            offers = _wait_for_second_attempt(stub, job.id, timeout=60)
            assert offers[1] != offers[0], offers
            lost = [e.message for e in events_so_far(stub, job.id) if e.kind == "lost"]
            assert lost and reason in lost[0], lost
    finally:
        stop.set()
