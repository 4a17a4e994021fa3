"""A scheduler elected again after a deposed term still launches at its cloud site.

Found by a held-out review of issue 13 (`bench/ha.py --mode pause`: 273 of 373 jobs never
launched, every one waiting with "site ali-bj is unhealthy"): a leader paused past its lease and
resumed ran one more reconciliation before it stepped down; the lease guard refused its listing
(NotLeader) and the process's planner, which outlives a term, marked the site unreachable. Elected
again later, the new term's dispatcher reached the site but only cleared marks it had made itself,
so the site stayed out of service in that process for good. Real `szb serve` processes on the real
PostgreSQL and the ECS double.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.clouds.e2e_helpers import md
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.ha.cloud import A10, cloud_cluster, gpu_spec, wait_until
from tests.ha.conftest import Cluster, Node

REFUSED = "list_owned refused: not the active scheduler"


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:
    cloud = EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    yield cloud
    ecs_server.handler = EcsCloud()


def take_over(cluster: Cluster, old: Node) -> Node:
    """Pause the leader until another leads, resume it, wait until it stepped down; the new leader."""
    old.pause()
    try:
        new = cluster.leader(timeout=60, among=[n for n in cluster.nodes if n is not old])
    finally:
        old.resume()
    wait_until("the old leader stepped down", lambda: not old.leading(), timeout=60, shown=old.text)
    return new


def refused_in_an_earlier_term(node: Node) -> bool:
    text = node.text()
    return REFUSED in text[: text.rfind("scheduler active")]


def test_a_leader_elected_again_after_a_deposed_term_launches_at_its_cloud_site(
    tmp_path: Path, pg_dsn: str, ecs_server: EcsEndpoint, ecs: EcsCloud
) -> None:
    cluster = cloud_cluster(tmp_path / "broker", pg_dsn, ecs_server.address)
    try:
        api = cluster.start("api")
        cluster.start("scheduler")
        cluster.start("scheduler")
        leader = cluster.leader()
        # Pauses longer than a reconcile interval (2 s): the resumed process's overdue
        # reconciliation usually runs before it steps down. Until a leader had one refused.
        for _ in range(8):
            leader = take_over(cluster, leader)
            if refused_in_an_earlier_term(leader):
                break
        if not refused_in_an_earlier_term(leader):
            pytest.skip("no deposed leader reconciled before stepping down in 8 takeovers")
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("after-terms")), metadata=md()).job
            shown = lambda: (leader.text()[-4000:] + "\n" + str(  # noqa: E731
                stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md()).job.message))
            wait_until("the job launched at ali-bj", lambda: bool(ecs.user_data), timeout=60, shown=shown)
    finally:
        cluster.stop()
