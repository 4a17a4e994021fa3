"""A tenant's budget through the real broker (szb serve, Alibaba on the ECS double): a burst running
past its estimate counts what it has cost so far, not only its reservation; spend and status say
when the month's spend has reached the policy's `burst.budget.alert_fraction` of the budget."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.clouds.ecs_a10 import a10_catalog, a10_job, ecs
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

__all__ = ["ecs"]  # conftest's blank ECS region gives way to the A10 one

UP: set[int] = {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}
PRICE = 3600.0  # CNY per hour: 1 CNY a second
BUDGET = 10.0
ALERT = 0.5  # the policy's alert_fraction


def start(start_broker: StartBroker, ecs_server: EcsEndpoint, price: float = PRICE) -> BrokerProcess:
    policy = (
        on_moto.POLICY_HEAD
        + on_moto.ONPREM_A800
        + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
        + f"""\
tenants:
  - {{id: ot, kind: sme, entity_country: CN, monthly_budget: {BUDGET}}}
burst:
  heartbeat_timeout: 1h
  budget: {{alert_fraction: {ALERT}}}
"""
        + on_moto.CN_RESIDENCY
    )
    return start_broker(
        on_moto.BrokerSetup(
            policy,
            tokens={"ot": TOKEN},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs=a10_catalog(price),
        )
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


def test_spend_and_status_say_when_a_tenant_has_used_its_alert_fraction_of_the_budget(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    # 1 CNY per 100 s of estimate: no job outruns its estimate (which would raise its reservation).
    broker = start(start_broker, ecs_server, price=PRICE / 100)
    cli = [sys.executable, "-m", "broker.cli", "spend", "--server", broker.address, "--token", TOKEN]
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        below = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("below", 400)), metadata=md()).job
        wait_state(stub, below.id, UP)  # 4 of 10 CNY: under the 50% alert
        assert not stub.GetSpend(pb.GetSpendRequest(), metadata=md()).budget_alert
        assert "alert" not in subprocess.run(cli, capture_output=True, text=True, check=True).stdout
        past = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("past", 200)), metadata=md()).job
        wait_state(stub, past.id, UP)  # 6 of 10 CNY reserved: past it
        assert stub.GetSpend(pb.GetSpendRequest(), metadata=md()).budget_alert
        [mine] = stub.GetStatus(pb.GetStatusRequest(), metadata=md()).tenants
        assert mine.tenant == "ot" and mine.budget_alert, mine
        out = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
        assert "alert: 60% of the budget used (alert at 50%)" in out, out
