"""Vouchers through the real broker: what a voucher pays is bounded by its balance, and its
balance is spent once, not once a month (szb serve, Alibaba on the ECS double)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.burst.money import month_of
from broker.model import AttemptId, JobId, SiteId, TenantId
from broker.store import SpendEntry, SqliteStore
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TERMINAL, TOKEN, ecs_user_data, md, play_bootstrap, wait_state
from tests.clouds.ecs_a10 import a10_catalog, a10_job, ecs
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

__all__ = ["ecs"]  # conftest's blank ECS region gives way to the A10 one

UP: set[int] = {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}
PRICE = 3600.0  # CNY per hour of the one A10 offer: 1 CNY a second


def policy(balance: float, discount: float, expires: str = "", budget: float | None = None) -> str:
    until = f", expires: {expires}" if expires else ""
    budget_line = "" if budget is None else f"\n    monthly_budget: {budget}"
    return (
        on_moto.POLICY_HEAD
        + on_moto.ONPREM_A800
        + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
        + f"""\
tenants:
  - id: vt
    kind: sme
    entity_country: CN{budget_line}
    vouchers: [{{id: v1, balance: {balance}, discount: {discount}, sites: [ali-bj]{until}}}]
burst:
  heartbeat_timeout: 1h
"""
        + on_moto.CN_RESIDENCY
    )


def start(
    start_broker: StartBroker,
    ecs_server: EcsEndpoint,
    balance: float,
    discount: float,
    expires: str = "",
    budget: float | None = None,
) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            policy(balance, discount, expires, budget),
            tokens={"vt": TOKEN},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs=a10_catalog(PRICE),
        )
    )


def entries(proc: BrokerProcess, job_id: str) -> list[SpendEntry]:
    store = SqliteStore(proc.config.parent / "data" / "broker.db")
    try:
        attempts = store.attempts_for(JobId(job_id))
        month = {a.id: month_of(a.created_at) for a in attempts}
        return [e for a in attempts for e in store.spend_entries(month[a.id]) if e.attempt_id == a.id]
    finally:
        store.close()


def test_a_run_longer_than_its_estimate_pays_cash_once_the_voucher_runs_out(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    balance = 2.0  # pays the 1 s estimate (1 CNY) in full, not a 3.5 s run
    broker = start(start_broker, ecs_server, balance, 1.0)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        first = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("long", 1)), metadata=md()).job
        wait_state(stub, first.id, UP)
        [reserved] = entries(broker, first.id)
        assert reserved.reserved == 0 and reserved.voucher > 0, reserved  # the voucher pays it all
        time.sleep(3.5)  # the instance runs well past its estimate
        play_bootstrap(broker, first.id, ecs_user_data([ecs.user_data]))
        assert wait_state(stub, first.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
        [settled] = entries(broker, first.id)
        assert settled.settled
        # The voucher paid what it had; the rest of the run is the tenant's cash.
        assert settled.voucher == pytest.approx(balance), settled
        assert settled.spent > 0, settled
        answer = stub.GetSpend(pb.GetSpendRequest(), metadata=md())
        assert answer.vouchers_left == 0
        assert answer.total_spent == pytest.approx(round(settled.spent, 2))
        # The next burst finds the voucher spent: all of it is cash.
        second = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("next", 3600)), metadata=md()).job
        wait_state(stub, second.id, UP)
        [after] = entries(broker, second.id)
        assert after.voucher == 0 and after.reserved == pytest.approx(PRICE), after


def test_a_run_past_its_estimate_counts_as_cash_only_what_its_voucher_will_not_pay(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """While a vouchered burst runs past its estimate, the cash counted is its cost so far less
    the voucher's discount of it, as at settlement (the voucher's share stayed at the estimate's,
    so a half-price run of 12 CNY counted 11.5 of a 10 CNY budget and refused the next burst)."""
    budget = 10.0
    broker = start(start_broker, ecs_server, 1000.0, 0.5, budget=budget)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        long = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("long", 1)), metadata=md()).job
        wait_state(stub, long.id, UP)
        deadline = time.monotonic() + 30
        while stub.GetJob(pb.GetJobRequest(id=long.id), metadata=md()).job.cost_so_far < 12:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(2)  # a status poll or two raises its reservation to what it has cost
        [running] = entries(broker, long.id)
        cost = stub.GetJob(pb.GetJobRequest(id=long.id), metadata=md()).job.cost_so_far
        assert running.voucher == pytest.approx(running.reserved, abs=1.5), running  # half each
        spend = stub.GetSpend(pb.GetSpendRequest(), metadata=md())
        assert spend.budget_left >= budget - cost / 2 - 1.5 and not spend.budget_over, (cost, spend)
        # 2 s more (1 CNY cash, 1 voucher) fits in what is left of the budget: it bursts.
        more = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("more", 2)), metadata=md()).job
        assert wait_state(stub, more.id, UP, timeout=10).state in UP
        stub.CancelJob(pb.CancelJobRequest(id=more.id), metadata=md())
        stub.CancelJob(pb.CancelJobRequest(id=long.id), metadata=md())


def test_a_voucher_spent_last_month_is_still_spent_this_month(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start(start_broker, ecs_server, 100.0, 0.5)
    broker.stop()
    last_month = month_of(datetime.now(UTC) - timedelta(days=32))
    store = SqliteStore(broker.config.parent / "data" / "broker.db")
    try:  # what an earlier month's bursts left: the whole balance drawn
        assert store.reserve_spend(
            SpendEntry(
                tenant=TenantId("vt"),
                site=SiteId("ali-bj"),
                job_id=JobId("job-earlier"),
                attempt_id=AttemptId("att-earlier"),
                month=last_month,
                reserved=0.0,
                spent=100.0,
                voucher=100.0,
                voucher_id="v1",
                settled=True,
            ),
            tenant_limit=None,
            global_limit=None,
        )
    finally:
        store.close()
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        assert stub.GetSpend(pb.GetSpendRequest(), metadata=md()).vouchers_left == 0
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("this-month", 3600)), metadata=md()).job
        wait_state(stub, job.id, UP)
        [entry] = entries(broker, job.id)
        assert entry.voucher == 0 and entry.reserved == pytest.approx(PRICE), entry


@pytest.mark.parametrize("days", [-1, 1], ids=["expired-yesterday", "expires-tomorrow"])
def test_a_voucher_pays_until_its_expiry_day_and_not_after(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker, days: int
) -> None:
    """`expires` is the voucher's last day (Beijing time): the day after, what is left of its
    balance pays nothing (it was read by nothing, and an expired voucher paid on for ever)."""
    beijing = timezone(timedelta(hours=8))
    day = (datetime.now(beijing) + timedelta(days=days)).date().isoformat()
    broker = start(start_broker, ecs_server, 100000.0, 0.5, expires=day)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        left = stub.GetSpend(pb.GetSpendRequest(), metadata=md()).vouchers_left
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("burst", 3600)), metadata=md()).job
        wait_state(stub, job.id, UP)
        [entry] = entries(broker, job.id)
    if days < 0:
        assert left == 0
        assert entry.voucher == 0 and entry.reserved == pytest.approx(PRICE), entry
    else:
        assert left == 100000
        assert entry.voucher == pytest.approx(PRICE / 2) and entry.reserved == pytest.approx(PRICE / 2), entry


def test_a_burst_draws_on_the_next_voucher_when_one_runs_out(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """A 90% voucher with 600 left pays its 600 (of 666.67 CNY of the run), then a 50% one half of
    the rest, before cash (one voucher paid per burst: the other 2,933.33 were all cash)."""
    text = policy(600.0, 0.9).replace(
        "sites: [ali-bj]}]", "sites: [ali-bj]}, {id: v2, balance: 100000, discount: 0.5}]"
    )
    assert "id: v2" in text
    broker = start_broker(
        on_moto.BrokerSetup(
            text,
            tokens={"vt": TOKEN},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs=a10_catalog(PRICE),
        )
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("burst", 3600)), metadata=md()).job
        wait_state(stub, job.id, UP)
        [entry] = entries(broker, job.id)
        assert [vid for vid, _ in entry.voucher_draws()] == ["v1", "v2"], entry
        paid = dict(entry.voucher_draws())
        assert paid == {"v1": pytest.approx(600), "v2": pytest.approx(1466.67, abs=0.01)}
        assert entry.reserved == pytest.approx(1533.34, abs=0.01), entry
        left = stub.GetSpend(pb.GetSpendRequest(), metadata=md()).vouchers_left
        assert left == pytest.approx(100600 - 2066.67, abs=0.01)
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md())
