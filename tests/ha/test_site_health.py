"""Issue 13, the api role: what the active scheduler learns about its sites (a sick site, an
open circuit breaker, the bursts it made) is what `szb status` and `/metrics` say on an API
replica, the only processes an operator asks in the split topology."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import JOB_PYTHON
from tests.clouds.e2e_helpers import md
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import spec
from tests.ha.cloud import OPERATOR_TOKEN, attempts, cloud_cluster, gpu_spec, wait_until
from tests.ha.conftest import Cluster, Node


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:
    cloud = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    yield cloud
    ecs_server.handler = EcsCloud()


@pytest.fixture
def sick(tmp_path: Path, pg_dsn: str, ecs_server: EcsEndpoint, ecs: EcsCloud) -> Iterator[Cluster]:
    """A split broker whose one cloud site refuses its access key (an auth error: breaker open)."""
    cluster = cloud_cluster(
        tmp_path / "broker", pg_dsn, ecs_server.address, access_key="access_key_id: ak-wrong"
    )
    cluster.config.write_text(cluster.config.read_text() + "metrics_listen: 127.0.0.1:0\n")
    try:
        yield cluster
    finally:
        cluster.stop()


def scrape(node: Node) -> str:
    url = next(m.group(1) for line in list(node.output) if (m := re.search(r"metrics on (\S+)", line)))
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    with urllib.request.urlopen(asked, timeout=10) as resp:
        text: str = resp.read().decode()
        return text


def test_a_site_the_leader_found_sick_is_reported_sick_by_a_replica(sick: Cluster) -> None:
    """The key is refused from the start: the leader's start-up reconcile pass finds it and the
    site is out of service from the first job on (no burst wasted there to find out)."""
    api = sick.start("api")
    sick.start("scheduler")
    sick.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("to-a-sick-site")), metadata=md()).job

        def status() -> pb.GetStatusResponse:
            answer: pb.GetStatusResponse = stub.GetStatus(pb.GetStatusRequest(), metadata=md())
            return answer

        wait_until(
            "the replica's szb status names the sick site", lambda: "ali-bj" in status().unhealthy_sites
        )
        seen = status()
    # The same words a one-process broker gives (a tenant sees the kind of trouble only).
    assert seen.unhealthy_sites["ali-bj"] == "unavailable", seen.unhealthy_sites
    assert seen.burst_decisions_last_hour == 0 and attempts(sick.dsn, job.id) == []
    metrics = scrape(api)
    assert 'szb_site_unhealthy{reason="unreachable",site="ali-bj"} 1.0' in metrics, metrics


def test_on_prem_capacity_through_a_replica_is_what_the_leader_read(cluster: Cluster) -> None:
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        busy: list[str] = []
        try:
            line = _fill_a800(stub, busy)
        finally:  # local jobs outlive the broker by design: a test ends the ones it started
            _cancel(stub, busy)
    assert (line.free, line.total, line.queued_jobs) == (0, 4, 1)
    assert line.expected_wait_seconds > 0


def _fill_a800(stub: broker_service_pb2_grpc.BrokerServiceStub, busy: list[str]) -> pb.PartitionStatus:
    """Two 600 s jobs fill the 4-GPU partition and a third waits (ids go into `busy`)."""
    for i in range(3):
        job = spec(f"busy-{i}", [JOB_PYTHON, "-c", "import time; time.sleep(600)"])
        job.resources.accelerators.count = 2
        job.resources.accelerators.any_of[:] = ["A800"]
        busy.append(stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth("team-a")).job.id)

    def a800() -> pb.PartitionStatus:
        answer = stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a"))
        return next(p for p in answer.partitions if p.partition == "a800")

    wait_until(
        "two jobs run and one waits",
        lambda: dict(stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a")).jobs_by_state)
        == {"RUNNING": 2, "QUEUED": 1},
    )
    # A one-process broker says 0/4 free with a wait; the replica must not show the
    # catalog's idea of an idle partition.
    wait_until("the replica shows the partition full", lambda: a800().free == 0)
    return a800()


def _cancel(stub: broker_service_pb2_grpc.BrokerServiceStub, jobs: list[str]) -> None:
    for job_id in jobs:
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("team-a"))
    wait_until(
        "the leader stopped the jobs",
        lambda: dict(stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a")).jobs_by_state)
        == {"CANCELLED": len(jobs)},
    )
