"""`szb spend` with an operator's token is every tenant's spend (szb serve, Alibaba on the ECS
double): an operator's `szb list` shows every tenant's jobs, and "what did bursting cost
yesterday" is asked the same way (`szb spend --since 1d --by tenant`)."""

from __future__ import annotations

import json
import time

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md
from tests.clouds.ecs_a10 import A10, a10_job, ecs
from tests.clouds.test_money_edges import UP, policy
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

__all__ = ["ecs"]

OPERATOR = "operator-token-of-the-on-call"
ROW = f"{A10},A10,1,8,30,36.0,,cn-beijing,cn-beijing-i,CNY"  # an A10 at 36 CNY an hour


def test_an_operators_spend_is_every_tenants_unless_it_names_one(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start_broker(
        on_moto.BrokerSetup(
            policy(),
            tokens={"mt": TOKEN},
            operators={"ops": OPERATOR},  # the README's `szb token --tenant ops --role operator`
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs={"ali.csv": on_moto.catalog(ROW, currency=True)},
        )
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("paid", 3600)), metadata=md()).job
        deadline = time.monotonic() + 30
        while stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job.state not in UP:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    mine = json.loads(szb(broker, TOKEN, "spend", "-o", "json").stdout)
    assert mine["total_reserved"] == 36.0  # the tenant's own: its hour at 36 CNY, held

    by_tenant = szb(broker, OPERATOR, "spend", "--since", "1d", "--by", "tenant", "-o", "json")
    assert by_tenant.returncode == 0, by_tenant.stderr
    body = json.loads(by_tenant.stdout)
    assert [(line["tenant"], line["reserved"]) for line in body["lines"]] == [("mt", 36.0)], body
    assert body["total_reserved"] == 36.0
    table = szb(broker, OPERATOR, "spend")
    assert table.returncode == 0, table.stderr
    assert "mt" in table.stdout and "reserved 36.00" in table.stdout, table.stdout
    assert "No monthly budget limit" not in table.stdout  # several tenants: no one budget line

    own = json.loads(szb(broker, OPERATOR, "spend", "--tenant", "ops", "-o", "json").stdout)
    assert own["lines"] == [] and own["total_reserved"] == 0  # naming one tenant still works
