"""A single-node cloud launch whose job is cancelled, or whose attempt times out, while the
cloud holds RunInstances' answer: the burst's reservation is settled and no instance is left
or started for the closed attempt (szb serve, moto behind the fault front)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.burst.money import month_of
from broker.model import Attempt, JobEvent, JobId
from broker.store import SpendEntry, SqliteStore
from tests.brokerproc import BrokerProcess
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import md
from tests.clouds.test_broker_bursts import broker, clouds, ec2_instances, gpu_job, setup
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront, throttle_fault

__all__ = ["broker", "clouds"]


def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def attempts_of(proc: BrokerProcess, job_id: str) -> list[Attempt]:
    store = SqliteStore(proc.config.parent / "data" / "broker.db")
    try:
        return store.attempts_for(JobId(job_id))
    finally:
        store.close()


def events_of(proc: BrokerProcess, job_id: str) -> list[JobEvent]:
    store = SqliteStore(proc.config.parent / "data" / "broker.db")
    try:
        return store.events_after(JobId(job_id), 0)
    finally:
        store.close()


def spend_of(proc: BrokerProcess, attempt: Attempt) -> list[SpendEntry]:
    store = SqliteStore(proc.config.parent / "data" / "broker.db")
    try:
        return [e for e in store.spend_entries(month_of(attempt.created_at)) if e.attempt_id == attempt.id]
    finally:
        store.close()


def live(moto: MotoFront, job_id: str) -> list[dict[str, object]]:
    return [
        i
        for i in ec2_instances(moto, "us-east-1", job_id)
        if i["State"]["Name"] not in ("terminated", "shutting-down")  # type: ignore[index]
    ]


def spend(stub: broker_service_pb2_grpc.BrokerServiceStub) -> pb.GetSpendResponse:
    return stub.GetSpend(pb.GetSpendRequest(), metadata=md())


def test_a_job_cancelled_while_its_instance_launches_settles_its_reservation(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    gate = threading.Event()
    moto.scenario.hold_after = {"RunInstances": gate}  # the instance exists; its answer waits
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        before = spend(stub)
        try:
            job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("cancel-mid", "A10G")), metadata=md()).job
            eventually(lambda: len(live(moto, job.id)) == 1, "the instance never started")
            during = spend(stub)
            assert during.total_reserved > before.total_reserved  # the burst's money is held
            cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md()).job
            assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
        finally:
            gate.set()
        eventually(lambda: attempts_of(broker, job.id)[-1].state.terminal, "the attempt never ended")
        eventually(lambda: not live(moto, job.id), "the instance was left running")
        [attempt] = attempts_of(broker, job.id)
        assert attempt.state.value == "CANCELLED"
        after = spend(stub)
    # The reservation is released (GetSpend, as szb spend shows it) and settled at what the
    # instance could have run for: seconds, not the hour reserved.
    assert after.total_reserved == before.total_reserved, after
    assert after.total_spent < during.total_reserved, after
    [entry] = spend_of(broker, attempt)
    assert entry.settled and 0 < entry.spent < entry.reserved, entry


def test_a_launch_past_its_attempt_timeout_starts_no_instance_for_the_closed_attempt(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    moto, _ = clouds
    base = setup(moto.url, ecs_server.address)
    timed = base.policy.replace(
        "retries: {max_transient_retries: 4, backoff_initial: 0.05s, backoff_max: 0.2s}",
        "retries: {max_transient_retries: 4, backoff_initial: 0.5s, backoff_max: 10s}\n  attempt_timeout: 3s",
    )
    proc = start_broker(replace(base, policy=timed))
    gate = threading.Event()
    moto.scenario.hold_before = {"RunInstances": gate}  # attempt 1's first call waits here
    with grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        try:
            job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("timed-out", "A10G")), metadata=md()).job
            eventually(lambda: moto.scenario.count("RunInstances") >= 1, "RunInstances was never called")
            first = attempts_of(proc, job.id)[0]
            # Its held call will be throttled (a transient error the launch retries)...
            moto.scenario.faults = [replace(throttle_fault(times=1), client_token=first.token)]
            # ...once the attempt has timed out and been closed.
            eventually(lambda: attempts_of(proc, job.id)[0].state.terminal, "attempt 1 never timed out")
        finally:
            gate.set()

        def tokens() -> list[str]:
            return [p.get("ClientToken", "") for a, _, p in moto.scenario.calls if a == "RunInstances"]

        def stopped() -> bool:
            return any(e.kind == "launch_stopped" for e in events_of(proc, job.id))

        eventually(lambda: tokens().count(first.token) > 1 or stopped(), "attempt 1's launch never ended")
        assert tokens().count(first.token) == 1, "attempt 1's launch called RunInstances after it was closed"
        assert stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job.state != job_pb2.JOB_STATE_FAILED


def test_a_job_cancelled_after_its_instance_launched_settles_its_reservation(
    broker: BrokerProcess, clouds: tuple[MotoFront, EcsCloud]
) -> None:
    moto, _ = clouds
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("cancel-up", "A10G")), metadata=md()).job
        eventually(lambda: any(a.backend_id for a in attempts_of(broker, job.id)), "never launched")
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())
        eventually(lambda: attempts_of(broker, job.id)[-1].state.terminal, "the attempt never ended")
        eventually(lambda: not live(moto, job.id), "the instance was left running")
        [attempt] = attempts_of(broker, job.id)
        assert spend(stub).total_reserved == 0
    [entry] = spend_of(broker, attempt)
    assert entry.settled and 0 < entry.spent < entry.reserved, entry
