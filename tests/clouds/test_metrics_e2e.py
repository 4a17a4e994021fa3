"""`/metrics` and the JSON log during a burst with failover: the numbers match what happened.

A real broker process (JSON logs, metrics on a free port) against moto and the ECS double:
both AWS sites are out of stock, so the job fails over twice in us-east-1, once in us-west-2
and runs on Alibaba. The scrape taken while it runs, and the log lines, are checked against
the job's own event history.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds.conftest import ECS_KEYS, StartBroker
from tests.clouds.e2e_helpers import (
    TERMINAL,
    TOKEN,
    agent_secret_of,
    ecs_user_data,
    events,
    live_attempt,
    md,
    play_bootstrap,
    wait_state,
)
from tests.clouds.test_broker_bursts import gpu_job, setup
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront, Scenario, capacity_fault

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


OPERATOR = "token-sg-lab-ops-0123456789"


def scrape(url: str, token: str = OPERATOR) -> Samples:
    """/metrics as Prometheus reads it, with an operator's bearer token."""
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(asked, timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


@pytest.fixture
def broker(moto: MotoFront, ecs_server: EcsEndpoint, start_broker: StartBroker) -> Iterator[BrokerProcess]:
    ecs_server.handler = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    proc = start_broker(
        dataclasses.replace(setup(moto.url, ecs_server.address), operators={"sg-lab": OPERATOR}),
        extra_env={"SZB_METRICS_LISTEN": "127.0.0.1:0", "SZB_LOG_FORMAT": "json"},
        timeout=120,  # a busy machine starts the cloud adapters slowly
    )
    yield proc
    proc.stop()  # before the double forgets its instances
    ecs_server.handler = EcsCloud()


def metrics_url(proc: BrokerProcess) -> str:
    for line in proc.output:
        m = re.search(r"metrics on (http://\S+/metrics)", line)
        if m:
            return m.group(1)
    raise AssertionError("the broker did not say where its metrics are:\n" + "".join(proc.output))


def test_metrics_and_logs_during_a_burst_with_failover(
    broker: BrokerProcess, moto: MotoFront, ecs_server: EcsEndpoint
) -> None:
    moto.scenario = Scenario(
        faults=[
            capacity_fault("g5.xlarge", zone="us-east-1a"),
            capacity_fault("g5.xlarge", zone="us-east-1b"),
            capacity_fault("g5.xlarge", region="us-west-2"),
        ]
    )
    url = metrics_url(broker)
    # Every tenant's budget and spend are on /metrics: a tenant's token (or none) reads nothing.
    for token in ("", TOKEN):
        with pytest.raises(urllib.error.HTTPError) as denied:
            scrape(url, token)
        assert denied.value.code == 401
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("metered", "A10G", "A10")), metadata=md()).job
        with pytest.raises(grpc.RpcError) as bad:
            stub.SubmitJob(pb.SubmitJobRequest(job=job_pb2.JobSpec(name="")), metadata=md())
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        deadline = time.monotonic() + 30
        while True:  # until it runs at Alibaba: then scrape, mid-burst
            current = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job
            if current.site == "aliyun-bj" and current.state == job_pb2.JOB_STATE_PROVISIONING:
                _, _, backend = live_attempt(broker.config.parent / "data", job.id)
                if backend is not None:
                    break
            assert current.state not in TERMINAL, current.message
            assert time.monotonic() < deadline, current.message
            time.sleep(0.1)
        during = scrape(url)
        attempt_id, attempt_token, _ = live_attempt(broker.config.parent / "data", job.id)
        assert isinstance(ecs_server.handler, EcsCloud)
        user_data = ecs_user_data([ecs_server.handler.user_data])
        agent_secret = agent_secret_of(user_data(backend))
        play_bootstrap(broker, job.id, user_data)
        status = stub.GetStatus(pb.GetStatusRequest(), metadata=md(OPERATOR))
        final = wait_state(stub, job.id, TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED
        history = events(stub, job.id)

    placed = [e for e in history if e.kind == "placed"]
    failed = [e for e in history if e.kind == "attempt_failed"]
    assert len(placed) == 4 and len(failed) == 3

    # Queue depth while the job provisions at Alibaba: exactly this one job, there.
    assert value(during, "szb_queue_jobs", state="PROVISIONING", site="aliyun-bj", tenant="sg-lab") == 1
    assert total(during, "szb_queue_jobs") == 1
    # Every placement was a burst decision, but one job burst, at Alibaba where it started: a
    # launch a cloud refused is a failover, not a burst (a review read 3 bursts for 2 jobs).
    assert all("burst" in e.message for e in placed), [e.message for e in placed]
    for site, n in (("aws-east", 0), ("aws-west", 0), ("aliyun-bj", 1)):
        assert value(during, "szb_bursts_total", site=site) == n, site
    assert status.burst_decisions_last_hour == 1
    assert value(during, "szb_failovers_total", site="aws-east", error="CapacityError") == 2
    assert value(during, "szb_failovers_total", site="aws-west", error="CapacityError") == 1
    assert value(during, "szb_attempts_total", site="aliyun-bj") == 1
    assert value(during, "szb_decisions_total", action="run") == 4
    assert value(during, "szb_placement_seconds_count") == total(during, "szb_decisions_total")
    assert value(during, "szb_dispatch_pass_seconds_count") >= 1
    # Backend calls: three refused launches, one accepted.
    assert (
        value(during, "szb_adapter_errors_total", site="aws-east", call="submit", error="CapacityError") == 2
    )
    assert (
        value(during, "szb_adapter_errors_total", site="aws-west", call="submit", error="CapacityError") == 1
    )
    assert value(during, "szb_adapter_calls_total", site="aliyun-bj", call="submit") == 1
    # The stock-outs are blocked (two zones in us-east-1, one in us-west-2); breakers stay closed.
    assert value(during, "szb_blocklist_entries") == 3
    for site in ("aws-east", "aws-west", "aliyun-bj"):
        assert value(during, "szb_breaker_state", site=site, state="closed") == 1
    # RPCs by method and code, the refused submission included.
    assert value(during, "szb_rpcs_total", method="SubmitJob", code="OK") == 1
    assert value(during, "szb_rpcs_total", method="SubmitJob", code="INVALID_ARGUMENT") == 1
    assert value(during, "szb_rpc_duration_seconds_count", method="SubmitJob") == 2
    # Money: the burst's reservation is this month's spend; the policy in force and its load.
    assert value(during, "szb_spend_month", tenant="sg-lab", currency="CNY") > 0
    assert value(during, "szb_policy_reloads_total", result="loaded") == 1
    assert total(during, "szb_policy_info") == 1
    assert ("szb_heartbeat_lag_seconds", frozenset({("site", "aliyun-bj")})) in during

    # One JSON log line per decision, attempt, burst and failover, with the ids.
    lines = [json.loads(line) for line in broker.output if line.startswith("{")]
    mine = [r for r in lines if r.get("job_id") == job.id]
    kinds = [r["event"] for r in mine if "event" in r]
    assert kinds.count("placed") == 4 and kinds.count("burst") == 4 and kinds.count("failover") == 3
    for r in mine:
        assert r["tenant"] == "sg-lab"
    failovers = [r for r in mine if r.get("event") == "failover"]
    assert [r["site"] for r in failovers] == ["aws-east", "aws-east", "aws-west"]
    assert all(r["error"].startswith("CapacityError") for r in failovers)
    # Secrets never reach the log: the tenant's token, the attempt's agent secret, cloud keys.
    text = "".join(broker.output)
    for secret in (TOKEN, attempt_token, agent_secret, ECS_KEYS["ak-test"]):
        assert secret not in text
    assert attempt_id in text
