"""What an operator sees of the month's money, through the real broker (szb serve, Alibaba on the
ECS double, the CLI over gRPC): the global burst cap and what is left of it, an unknown tenant,
a budget lowered below what is already spent, and the log line of a budget alert."""

from __future__ import annotations

import json
import signal
import time

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.clouds.ecs_a10 import a10_catalog, a10_job, ecs
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

__all__ = ["ecs"]  # conftest's blank ECS region gives way to the A10 one

UP: set[int] = {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}
PRICE = 36.0  # CNY per hour: 1 CNY per 100 s of estimate, so no job outruns its estimate in a test
# (one that did would have its reservation raised to its cost so far, and move every figure)
OPERATOR = "operator-token-of-the-on-call"


def policy(budget: float, *, cap: float = 50.0, alert: float = 0.5) -> str:
    return (
        on_moto.POLICY_HEAD
        + on_moto.ONPREM_A800
        + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
        + f"""\
tenants:
  - {{id: ot, kind: sme, entity_country: CN, monthly_budget: {budget}}}
burst:
  heartbeat_timeout: 1h
  budget: {{alert_fraction: {alert}, global_monthly_cap: {cap}}}
"""
        + on_moto.CN_RESIDENCY
    )


def start(
    start_broker: StartBroker, ecs_server: EcsEndpoint, budget: float = 10.0, cap: float = 50.0
) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            policy(budget, cap=cap),
            tokens={"ot": TOKEN},
            operators={"ops": OPERATOR},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs=a10_catalog(PRICE),
        ),
        extra_env={"SZB_LOG_FORMAT": "json"},
    )


def burst(stub: broker_service_pb2_grpc.BrokerServiceStub, name: str, cny: int) -> str:
    """Submit a job that bursts at once with `cny` reserved (its estimate: 100 s per CNY); its id once up."""
    job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job(name, cny * 100)), metadata=md()).job
    wait_state(stub, job.id, UP)
    return job.id


def ok(broker: BrokerProcess, token: str, *args: str) -> str:
    done = szb(broker, token, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_and_spend_show_the_global_burst_cap_and_what_is_left_of_it(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start(start_broker, ecs_server, budget=100.0)
    with grpc.insecure_channel(broker.address) as channel:
        burst(broker_service_pb2_grpc.BrokerServiceStub(channel), "forty", 40)  # 40 of the 50 CNY cap
    status = json.loads(ok(broker, OPERATOR, "status", "-o", "json"))
    assert status["burst_cap"] == {"cap": 50.0, "used": 40.0, "left": 10.0, "over": 0.0}, status
    text = ok(broker, OPERATOR, "status")
    assert "Global burst cap: 40.00 of 50.00 CNY spent or reserved this month, 10.00 left" in text, text
    spend = json.loads(ok(broker, OPERATOR, "spend", "--tenant", "*", "-o", "json"))
    assert spend["burst_cap"] == {"cap": 50.0, "used": 40.0, "left": 10.0, "over": 0.0}, spend
    text = ok(broker, OPERATOR, "spend", "--tenant", "*")
    assert "Global burst cap: 40.00 of 50.00 CNY spent or reserved this month, 10.00 left" in text, text
    # A tenant sees its own money, not what every tenant has spent.
    assert "burst_cap" not in json.loads(ok(broker, TOKEN, "status", "-o", "json"))
    assert json.loads(ok(broker, TOKEN, "spend", "-o", "json")).get("burst_cap") is None


def test_a_tenants_status_counts_its_own_bursts_only(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    quiet = "token-of-the-quiet-tenant-0123"
    broker = start_broker(
        on_moto.BrokerSetup(
            policy(100.0).replace("tenants:\n", "tenants:\n  - {id: quiet, kind: sme, entity_country: CN}\n"),
            tokens={"ot": TOKEN, "quiet": quiet},
            operators={"ops": OPERATOR},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs=a10_catalog(PRICE),
        )
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        burst(stub, "mine", 5)

        def bursts(token: str) -> int:
            return stub.GetStatus(pb.GetStatusRequest(), metadata=md(token)).burst_decisions_last_hour

        # (the operator's count comes with the scheduler's site report, about once a second)
        deadline = time.monotonic() + 10
        while bursts(OPERATOR) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (bursts(OPERATOR), bursts(TOKEN), bursts(quiet)) == (1, 1, 0)
    assert "Jobs burst in the last hour: 0" in ok(broker, quiet, "status")


def test_spend_of_a_tenant_the_policy_does_not_declare_is_an_error(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start(start_broker, ecs_server)
    done = szb(broker, OPERATOR, "spend", "--tenant", "nobody")
    assert done.returncode != 0, done.stdout
    assert "nobody" in done.stderr and "not found" in done.stderr.lower(), done.stderr
    assert "No monthly budget limit" not in done.stdout
    # A declared tenant with no spend, and the operator's own tenant, still answer.
    assert json.loads(ok(broker, OPERATOR, "spend", "--tenant", "ot", "-o", "json"))["budget_left"] == 10.0
    assert json.loads(ok(broker, OPERATOR, "spend", "--tenant", "ops", "-o", "json"))["lines"] == []


def test_a_budget_lowered_below_the_spend_shows_nothing_left_and_how_much_it_is_over(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start(start_broker, ecs_server, budget=100.0, cap=500.0)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        burst(stub, "sixty", 60)  # 60 CNY reserved
        old = stub.GetStatus(pb.GetStatusRequest(), metadata=md()).policy_hash
        (broker.config.parent / "policy.yaml").write_text(policy(18.9, cap=500.0))
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while stub.GetStatus(pb.GetStatusRequest(), metadata=md()).policy_hash == old:
            assert time.monotonic() < deadline, "the lowered budget never went into force"
            time.sleep(0.2)
    spend = json.loads(ok(broker, TOKEN, "spend", "-o", "json"))
    assert (spend["budget"], spend["budget_left"], spend["budget_over"]) == (18.9, 0.0, 41.1), spend
    text = ok(broker, TOKEN, "spend")
    assert "left 0.00, over by 41.10" in text and "-41.1" not in text, text
    [mine] = json.loads(ok(broker, OPERATOR, "status", "-o", "json"))["tenants"]
    assert (mine["budget_left"], mine["budget_over"]) == (0.0, 41.1), mine
    text = ok(broker, OPERATOR, "status")
    assert "ot: 0.00 of 18.90 CNY left (over by 41.10)" in text and "-41.1" not in text, text


def test_a_tenant_crossing_its_alert_fraction_is_logged_and_audited_once_a_month(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start(start_broker, ecs_server)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        burst(stub, "below", 4)  # 4 of 10 CNY: under the 50% alert
        past = burst(stub, "past", 2)  # 6 of 10: crosses it
        burst(stub, "more", 1)  # 7 of 10: still past it, no second alert

    def alerts() -> list[dict[str, object]]:
        records = [json.loads(line) for line in broker.output if line.startswith("{")]
        return [r for r in records if r.get("event") == "budget_alert"]

    deadline = time.monotonic() + 10  # (the broker's output reaches the test through a pipe)
    while not alerts() and time.monotonic() < deadline:
        time.sleep(0.1)
    [line] = alerts()
    assert line["tenant"] == "ot" and line["job_id"] == past, line
    assert (line["used"], line["budget"], line["alert_fraction"], line["currency"]) == (6.0, 10.0, 0.5, "CNY")
    events = json.loads(ok(broker, OPERATOR, "audit", "--tenant", "ot", "-o", "json"))["events"]
    [audited] = [e for e in events if e["kind"] == "budget"]
    assert audited["job_id"] == past, audited
    assert "6.00 of its 10.00 CNY budget" in audited["message"], audited
    broker.stop()
    broker.restart()  # the month's alert is in the store: not logged again after a restart
    with grpc.insecure_channel(broker.address) as channel:
        burst(broker_service_pb2_grpc.BrokerServiceStub(channel), "again", 1)
    assert len(alerts()) == 1


def test_offers_say_no_where_the_budget_refuses_every_burst(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    """A review: with `monthly_budget: 0`, `szb offers` said "yes" for the A10 at ali-bj while a
    job there waited on `budget: ... 0.00 left this month`. The view judges the money as the
    decision does (an hour of the offer against what is left) and says why."""
    broker = start(start_broker, ecs_server, budget=0.0)
    rows = {r["site"]: r for r in json.loads(ok(broker, TOKEN, "offers", "-o", "json"))["offers"]}
    cloud = rows["ali-bj"]
    assert not cloud["allowed"], cloud
    [reason] = cloud["reasons"]
    assert reason["rule"] == "budget" and "0.00 left this month" in reason["message"], reason
    assert rows["onprem"]["allowed"], rows["onprem"]  # on-prem work takes no burst money
    assert "no: [budget]" in ok(broker, TOKEN, "offers", "--accelerator", "A10")
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("refused", 3600)), metadata=md()).job
        deadline = time.monotonic() + 30
        while "budget:" not in (said := stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job.message):
            assert time.monotonic() < deadline, said
            time.sleep(0.2)
