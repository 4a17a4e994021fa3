"""Wake-ups lost while the scheduler's LISTEN session reconnects are made up once it is back."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import grpc

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from tests.brokerproc import JOB_PYTHON
from tests.clouds.e2e_helpers import agent_secret_of, md
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import spec
from tests.ha.cloud import A10, attempts, cloud_cluster, gpu_spec, wait_until
from tests.ha.conftest import Cluster, Node
from tests.ha.sessions import end_listen_session


def test_a_job_submitted_while_the_listener_reconnects_is_decided_at_once(cluster: Cluster) -> None:
    """Found by a review of issue 13: it waited for the next full rescan (30 s and more)."""
    text = cluster.config.read_text()
    scan = "poll_interval_s: 0.2, requeue_scan_s: 900"  # (no rescan finds the job in time)
    cluster.config.write_text(text.replace("poll_interval_s: 0.2", scan))
    api = cluster.start("api")
    cluster.start("scheduler")
    leader = cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        end_listen_session(cluster.dsn, leader.pid)
        time.sleep(0.3)  # gone; the listener reconnects a second later
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec("gap", [JOB_PYTHON, "-c", "pass"])),
                             metadata=auth("team-a")).job

        def decided() -> bool:
            got = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job
            return got.state != job_pb2.JOB_STATE_QUEUED

        wait_until("the job is decided", decided, timeout=8, shown=leader.text)


def test_an_instance_whose_exit_came_while_the_listener_reconnects_is_removed_at_once(
    tmp_path: Path, pg_dsn: str, ecs_server: EcsEndpoint
) -> None:
    """Found by the same review: the instance stayed up until the periodic reconcile."""
    cloud = EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    split = cloud_cluster(tmp_path / "broker", pg_dsn, ecs_server.address)
    text = split.config.read_text()
    split.config.write_text(text.replace("reconcile_interval_s: 2", "reconcile_interval_s: 600"))
    try:
        _exit_during_the_gap(split, pg_dsn, cloud)
    finally:
        split.stop()


def test_an_exit_in_a_second_gap_soon_after_the_first_is_still_removed(
    tmp_path: Path, pg_dsn: str, ecs_server: EcsEndpoint
) -> None:
    """CI saw the catch-up's reconcile skipped for a gap within 30 s of the last (the listener's
    first connection landed as the term began); a later one is now put off to then, not dropped."""
    cloud = EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    split = cloud_cluster(tmp_path / "broker", pg_dsn, ecs_server.address)
    text = split.config.read_text()
    split.config.write_text(text.replace("reconcile_interval_s: 2", "reconcile_interval_s: 600"))
    try:
        _exit_during_the_gap(split, pg_dsn, cloud, gaps=2, timeout=45)
    finally:
        split.stop()


def _exit_during_the_gap(split: Cluster, pg_dsn: str, cloud: EcsCloud, gaps: int = 1,
                         timeout: float = 10) -> None:
    api = split.start("api")
    split.start("scheduler")
    leader = split.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("gap-exit")), metadata=md()).job
        wait_until("the instance is up", lambda: any(a.backend_id for a in attempts(pg_dsn, job.id)))
        [attempt] = [a for a in attempts(pg_dsn, job.id) if a.backend_id]
        assert attempt.backend_id is not None
        secret = agent_secret_of(base64.b64decode(cloud.user_data[attempt.backend_id]).decode())
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        agent.Heartbeat(agent_service_pb2.HeartbeatRequest(attempt_id=attempt.id, token=secret, running=True))
        for _ in range(gaps - 1):  # reconnects before the one the exit falls into
            _end_and_wait_for_reconnect(pg_dsn, leader)
        end_listen_session(pg_dsn, leader.pid)
        time.sleep(0.3)
        exited = agent_service_pb2.ReportExitRequest(attempt_id=attempt.id, token=secret, exit_code=0)
        agent.ReportExit(exited)
        wait_until("the instance is removed", lambda: attempt.backend_id not in cloud.instances,
                   timeout=timeout, shown=leader.text)


def _end_and_wait_for_reconnect(pg_dsn: str, leader: Node) -> None:
    before = leader.text().count("catching up")
    end_listen_session(pg_dsn, leader.pid)
    wait_until("the listener is back", lambda: leader.text().count("catching up") > before)
