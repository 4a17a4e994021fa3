"""`szb_heartbeat_lag_seconds` after a broker restart (szb serve, Alibaba on the ECS double).

The broker cannot know how long an instance was silent while it was down, and it gives every
live attempt a full heartbeat timeout after a restart; the metric counted from the attempt's
creation instead, so every restart with long-running cloud jobs showed days of silence (and
fired any lag alert) until each instance's next heartbeat.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, live_attempt, md
from tests.clouds.ecs_a10 import A10, a10_job, ecs
from tests.clouds.test_metrics_e2e import OPERATOR, metrics_url
from tests.clouds.test_money_edges import policy
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

__all__ = ["ecs"]

METRICS = {"SZB_METRICS_LISTEN": "127.0.0.1:0"}
ROW = f"{A10},A10,1,8,30,3.6,,cn-beijing,cn-beijing-i,CNY"  # an A10 at 3.6 CNY an hour


def lag(proc: BrokerProcess, site: str) -> float:
    asked = urllib.request.Request(metrics_url(proc), headers={"Authorization": f"Bearer {OPERATOR}"})
    with urllib.request.urlopen(asked, timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "szb_heartbeat_lag_seconds" and s.labels.get("site") == site:
                return s.value
    raise AssertionError(f"no heartbeat lag for {site}:\n{text}")


def launched(data: Path, job_id: str) -> bool:
    try:
        return live_attempt(data, job_id)[2] is not None
    except IndexError:  # no attempt yet
        return False


def test_the_lag_after_a_restart_counts_from_the_restart(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    setup = on_moto.BrokerSetup(
        policy(),  # heartbeat_timeout 1h: the silent instance stays live throughout
        tokens={"mt": TOKEN},
        operators={"mt": OPERATOR},
        sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
        catalogs={"ali.csv": on_moto.catalog(ROW, currency=True)},
    )
    first = start_broker(setup, extra_env=METRICS)
    with grpc.insecure_channel(first.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=a10_job("silent", 36_000)), metadata=md()).job
    data = first.config.parent / "data"
    deadline = time.monotonic() + 30
    while not launched(data, job.id):  # the instance is up (its bootstrap never runs)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(3)  # the attempt is older than the next broker by these seconds at least
    first.stop()
    began = time.time()
    second = BrokerProcess(first.config, extra_env=METRICS)
    second.start(timeout=120)
    try:
        seen = lag(second, "ali-bj")
        assert seen <= time.time() - began, seen  # no older than the broker that measures it
    finally:
        second.stop()
