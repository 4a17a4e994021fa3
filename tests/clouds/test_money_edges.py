"""Money at the edges through the real broker: a launch the cloud refused, a burst worth less than
a cent (szb serve, Alibaba on the ECS double), and an exchange rate changed while a burst runs
(AWS on moto)."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.burst.money import month_of
from broker.model import Attempt, JobId
from broker.store import SpendEntry, SqliteStore
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.clouds.ecs_a10 import a10_catalog, a10_job, ecs
from tests.clouds.test_broker_bursts import POLICY, clouds, gpu_job, setup
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint, EcsFault, EcsRequest, Reply
from tests.doubles.moto_front import MotoFront

__all__ = ["clouds", "ecs"]  # fixtures

UP: set[int] = {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}


def policy(fx: float = 7.2) -> str:
    return (
        on_moto.POLICY_HEAD.replace("fx: {USD: 7.2}", f"fx: {{USD: {fx}}}")
        + on_moto.ONPREM_A800
        + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
        + """\
tenants:
  - {id: mt, kind: sme, entity_country: CN}
burst:
  heartbeat_timeout: 1h
"""
        + on_moto.CN_RESIDENCY
    )


@dataclass
class SlowLaunches:
    """The ECS double, answering RunInstances only after `delay_s` (a slow cloud API)."""

    cloud: EcsCloud
    delay_s: float

    def __call__(self, req: EcsRequest) -> Reply:
        if req.action == "RunInstances":
            time.sleep(self.delay_s)
        return self.cloud(req)


def start(start_broker: StartBroker, ecs_server: EcsEndpoint, price: float) -> BrokerProcess:
    """A broker whose one cloud offer is an A10 at `price` CNY an hour."""
    return start_broker(
        on_moto.BrokerSetup(
            policy(),
            tokens={"mt": TOKEN},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs=a10_catalog(price),
        )
    )


def attempts_and_spend(proc: BrokerProcess, job_id: str) -> list[tuple[Attempt, SpendEntry]]:
    store = SqliteStore(proc.config.parent / "data" / "broker.db")
    try:
        return [
            (a, e)
            for a in store.attempts_for(JobId(job_id))
            for e in store.spend_entries(month_of(a.created_at))
            if e.attempt_id == a.id
        ]
    finally:
        store.close()


def eventually_terminal(proc: BrokerProcess, job_id: str) -> list[tuple[Attempt, SpendEntry]]:
    deadline = time.monotonic() + 30
    while True:
        found = attempts_and_spend(proc, job_id)
        if found and all(a.state.terminal and e.settled for a, e in found):
            return found
        assert time.monotonic() < deadline, f"the attempt never ended: {found}"
        time.sleep(0.1)


def test_a_launch_the_cloud_refused_bills_nothing(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """No instance was ever created: nothing is owed, however long the refusal took to come."""
    broker = start(start_broker, ecs_server, 3600.0)  # 1 CNY a second
    ecs.faults = [EcsFault("RunInstances", "OperationDenied.NoStock", status=403, times=1)]
    ecs_server.handler = SlowLaunches(ecs, 1.5)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("sold-out", 3600)), metadata=md()).job
        [(attempt, entry), *_] = eventually_terminal(broker, job.id)
        assert attempt.state.value == "FAILED" and attempt.backend_id is None, attempt
        assert "NoStock" in attempt.error, attempt
        assert not ecs.instances
        assert entry.reserved == pytest.approx(3600.0), entry  # its hour was held while it launched
        assert entry.spent == 0 and entry.voucher == 0, entry
        answer = stub.GetSpend(pb.GetSpendRequest(), metadata=md())
        [line] = [ln for ln in answer.lines if ln.site == "ali-bj"]
        assert line.spent == 0, answer
        assert answer.total_spent == 0, answer


def test_a_burst_worth_less_than_a_cent_reserves_a_cent(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """0.001 CNY rounded to cents is 0: reserved as such, any number of them fits any budget."""
    broker = start(start_broker, ecs_server, 3.6)  # 0.001 CNY a second
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("tiny", 1)), metadata=md()).job
        wait_state(stub, job.id, UP)
        [(_, entry)] = attempts_and_spend(broker, job.id)
        assert entry.reserved == pytest.approx(0.01), entry
        assert stub.GetSpend(pb.GetSpendRequest(), metadata=md()).total_reserved == pytest.approx(0.01)


def wait_policy_hash(stub: broker_service_pb2_grpc.BrokerServiceStub, old: str) -> None:
    deadline = time.monotonic() + 15
    while stub.GetStatus(pb.GetStatusRequest(), metadata=md()).policy_hash == old:
        assert time.monotonic() < deadline, "the new policy was never swapped in"
        time.sleep(0.2)


def test_a_burst_is_settled_at_the_exchange_rate_it_was_reserved_at(
    clouds: tuple[MotoFront, EcsCloud], ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """The operator moves USD from 7.2 to 72 CNY while a USD-priced burst runs (AWS on moto):
    the work already running keeps the rate it was reserved (and decided) at."""
    price = 1.006  # USD an hour of the g5.xlarge (A10G) in us-east-1
    broker = start_broker(setup(clouds[0].url, ecs_server.address))
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("usd", "A10G")), metadata=md()).job
        wait_state(stub, job.id, UP)
        [(_, reserved)] = attempts_and_spend(broker, job.id)
        assert reserved.site == "aws-east" and reserved.reserved == pytest.approx(price * 7.2, abs=0.01), (
            reserved
        )
        old = stub.GetStatus(pb.GetStatusRequest(), metadata=md()).policy_hash
        (broker.config.parent / "policy.yaml").write_text(POLICY.replace("fx: {USD: 7.2}", "fx: {USD: 72}"))
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        wait_policy_hash(stub, old)
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())
        [(attempt, entry)] = eventually_terminal(broker, job.id)
    hours = (attempt.updated_at - attempt.created_at).total_seconds() / 3600
    rate = entry.spent / (price * hours)  # CNY per USD the run was settled at
    assert 5 < rate < 10, (rate, entry)  # 72 when re-priced at the new rate
