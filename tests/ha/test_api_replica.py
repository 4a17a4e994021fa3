"""Issue 13, the api role: WatchJob and agent reports through an API replica that is not the
leader (the scheduler's writes reach the watcher; the agent's reports reach the scheduler)."""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from tests.clouds.e2e_helpers import agent_secret_of, md, wait_state
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.ha.cloud import HeldCloud, attempts, cloud_cluster, gpu_spec, wait_until
from tests.ha.conftest import Cluster, Node
from tests.ha.test_site_health import scrape

TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:
    cloud = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    yield cloud
    ecs_server.handler = EcsCloud()


@pytest.fixture
def split(tmp_path: Path, pg_dsn: str, ecs_server: EcsEndpoint, ecs: EcsCloud) -> Iterator[Cluster]:
    cluster = cloud_cluster(tmp_path / "broker", pg_dsn, ecs_server.address)
    try:
        yield cluster
    finally:
        cluster.stop()


def agent_url(node: Node) -> str:
    m = re.search(r"agent endpoint on (http://\S+)", node.text())
    assert m, node.text()
    return m.group(1)


def launched(dsn: str, job_id: str) -> bool:
    tried = attempts(dsn, job_id)
    return bool(tried) and tried[-1].backend_id is not None


def post_exit(url: str, attempt_id: str, secret: str) -> dict[str, object]:
    body = json.dumps({"attempt_id": attempt_id, "kind": "exit", "exit_code": 0, "log_tail": "done\n"})
    req = urllib.request.Request(
        f"{url}/v1/agent/report",
        data=body.encode(),
        headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, object] = json.loads(resp.read() or b"{}")
        return answer


def test_watch_and_agent_reports_go_through_a_replica_that_is_not_the_leader(
    split: Cluster, ecs: EcsCloud
) -> None:
    api = split.start("api")
    split.start("scheduler")
    leader = split.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("via-replica")), metadata=md()).job
        seen: list[job_pb2.JobEvent] = []
        stream = stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=md(), timeout=60)
        watcher = threading.Thread(target=lambda: seen.extend(r.event for r in stream), daemon=True)
        watcher.start()
        wait_until("the leader launched an instance", lambda: launched(split.dsn, job.id))
        attempt = attempts(split.dsn, job.id)[-1]
        assert attempt.backend_id is not None
        secret = agent_secret_of(base64.b64decode(ecs.user_data[attempt.backend_id]).decode())
        # The watcher sees the leader's writes (placed, attempt) through the replica.
        wait_until("the replica's watcher saw the attempt", lambda: any(e.kind == "attempt" for e in seen))
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        beat = agent.Heartbeat(
            agent_service_pb2.HeartbeatRequest(attempt_id=attempt.id, token=secret, running=True)
        )
        assert not beat.stop
        assert wait_state(stub, job.id, {job_pb2.JOB_STATE_RUNNING}).state == job_pb2.JOB_STATE_RUNNING
        post_exit(agent_url(api), attempt.id, secret)
        done = wait_state(stub, job.id, TERMINAL)
        watcher.join(timeout=30)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED and done.log_tail == "done\n"
    kinds = [e.kind for e in seen]
    assert kinds[0] == "submitted" and "running" in kinds and "finished" in kinds, kinds
    # The leader writes the instance's removal ('terminated') a few ms after 'finished'; a watcher
    # reading after both gets both, so only that may follow the job's end.
    assert set(kinds[kinds.index("finished") + 1 :]) <= {"terminated"}, kinds
    assert not watcher.is_alive(), "the watch stream did not end with the job"
    # The leader acts on the report that came through the replica: the instance is removed.
    wait_until("the leader terminated the finished instance", lambda: not ecs.instances)
    assert leader.leading()


def test_a_cancel_through_a_replica_stops_the_instance_the_leader_started(
    split: Cluster, ecs: EcsCloud
) -> None:
    api = split.start("api")
    split.start("scheduler")
    split.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("cancel-via-replica")), metadata=md()).job
        wait_until("the leader launched an instance", lambda: launched(split.dsn, job.id))
        assert len(ecs.instances) == 1
        answer = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md()).job
        # The replica records a request; the leader, woken, settles it, usually within the answer.
        assert answer.state == job_pb2.JOB_STATE_CANCELLED or "cancel requested" in answer.message, answer
        assert wait_state(stub, job.id, {job_pb2.JOB_STATE_CANCELLED}).state == job_pb2.JOB_STATE_CANCELLED
    # The leader stops the instance at the backend.
    wait_until("the leader stopped the cancelled job's instance", lambda: not ecs.instances)
    wait_until("the attempt is closed", lambda: attempts(split.dsn, job.id)[-1].state.terminal)


def test_an_agent_of_a_job_cancelled_while_no_scheduler_runs_is_told_to_stop(
    split: Cluster, ecs: EcsCloud
) -> None:
    """Review: a heartbeat for a cancelled job whose instance still ran (no leader to stop it, or
    its stop throttled) answered INTERNAL (AttributeError) on a replica; the agent was never told.
    With no leader the cancel of a running job is only requested (nobody can tell whether its
    run ended first); the agent, which says it still runs, is told to stop all the same."""
    api = split.start("api")
    scheduler = split.start("scheduler")
    split.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("cancel-no-leader")), metadata=md()).job
        wait_until("the leader launched an instance", lambda: launched(split.dsn, job.id))
        attempt = attempts(split.dsn, job.id)[-1]
        assert attempt.backend_id is not None
        secret = agent_secret_of(base64.b64decode(ecs.user_data[attempt.backend_id]).decode())
        scheduler.kill()
        requested = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md()).job
        assert requested.state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING), requested
        assert "cancel requested" in requested.message
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        for _ in range(2):  # each beat while the instance runs on
            beat = agent.Heartbeat(
                agent_service_pb2.HeartbeatRequest(attempt_id=attempt.id, token=secret, running=True)
            )
            assert beat.stop
    assert ecs.instances, "nothing should have stopped the instance: no scheduler runs"
    assert not attempts(split.dsn, job.id)[-1].state.terminal


def test_a_gang_cancelled_through_a_replica_mid_launch_starts_no_further_rank(
    split: Cluster, ecs: EcsCloud, ecs_server: EcsEndpoint
) -> None:
    held = HeldCloud(ecs)
    ecs_server.handler = held  # rank 0 starts; its answer waits until the job is cancelled
    api = split.start("api")
    split.start("scheduler")
    split.leader()
    spec = gpu_spec("gang-cancel-via-replica")
    spec.resources.nodes = 3
    try:
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job
            wait_until("rank 0 was started", lambda: len(ecs.instances) == 1)
            cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=md()).job
            assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    finally:
        held.gate.set()
    wait_until("the attempt is closed", lambda: attempts(split.dsn, job.id)[-1].state.terminal)
    # The leader's launch stopped before rank 1 and rolled back rank 0 and the deployment set.
    assert held.run_calls == 1
    wait_until("rank 0 was rolled back", lambda: not ecs.instances)
    wait_until("the deployment set was deleted", lambda: not ecs.deployment_sets)
    assert attempts(split.dsn, job.id)[-1].state.value == "CANCELLED"


def test_output_an_agent_posts_to_one_replica_streams_from_another(split: Cluster, ecs: EcsCloud) -> None:
    # Each replica with a disk of its own, as on two hosts: only the database is shared.
    first = split.start("api", {"SZB_DATA_DIR": str(split.config.parent / "replica-1")})
    second = split.start("api", {"SZB_DATA_DIR": str(split.config.parent / "replica-2")})
    split.start("scheduler")
    split.leader()
    with grpc.insecure_channel(first.address) as one, grpc.insecure_channel(second.address) as two:
        stub = broker_service_pb2_grpc.BrokerServiceStub(one)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("logs-anywhere")), metadata=md()).job
        wait_until("the leader launched an instance", lambda: launched(split.dsn, job.id))
        attempt = attempts(split.dsn, job.id)[-1]
        assert attempt.backend_id is not None
        secret = agent_secret_of(base64.b64decode(ecs.user_data[attempt.backend_id]).decode())
        lines = [b"epoch 1/3\n", b"epoch 2/3\n", b"epoch 3/3\n"]
        offset = 0
        for i, line in enumerate(lines):  # alternate replicas, as a load balancer would
            agent = agent_service_pb2_grpc.AgentServiceStub(one if i % 2 == 0 else two)
            req = agent_service_pb2.AppendLogRequest(
                attempt_id=attempt.id, token=secret, offset=offset, data=line
            )
            offset = agent.AppendLog(req).next_offset
        # A chunk sent again (a retry after a lost answer) is acknowledged, not kept twice.
        again = agent_service_pb2.AppendLogRequest(
            attempt_id=attempt.id, token=secret, offset=0, data=lines[0]
        )
        assert agent_service_pb2_grpc.AgentServiceStub(two).AppendLog(again).next_offset == offset
        for channel in (one, two):
            logs = broker_service_pb2_grpc.BrokerServiceStub(channel).StreamJobLogs(
                pb.StreamJobLogsRequest(id=job.id), metadata=md(), timeout=30
            )
            assert b"".join(r.chunk.data for r in logs) == b"".join(lines)


def lag(node: Node, site: str) -> float:
    """The replica's `szb_heartbeat_lag_seconds` for `site`."""
    m = re.search(rf'^szb_heartbeat_lag_seconds\{{site="{site}"\}} (\S+)$', scrape(node), re.M)
    assert m, f"no heartbeat lag for {site}"
    return float(m.group(1))


def test_an_agents_heartbeats_through_one_replica_keep_every_replicas_lag_low(
    split: Cluster, ecs: EcsCloud
) -> None:
    split.config.write_text(split.config.read_text() + "metrics_listen: 127.0.0.1:0\n")
    first = split.start("api")
    second = split.start("api")  # an agent's gRPC channel sticks to one replica behind a balancer
    split.start("scheduler")
    split.leader()
    with grpc.insecure_channel(first.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("beats-via-one")), metadata=md()).job
        wait_until("the leader launched an instance", lambda: launched(split.dsn, job.id))
        attempt = attempts(split.dsn, job.id)[-1]
        assert attempt.backend_id is not None
        secret = agent_secret_of(base64.b64decode(ecs.user_data[attempt.backend_id]).decode())
        # Old enough that a lag counted from the launch cannot pass for a fresh heartbeat.
        wait_until("the instance is 4 s old", lambda: lag(second, "ali-bj") > 4)
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        stop = threading.Event()

        def beat() -> None:
            while not stop.is_set():
                agent.Heartbeat(
                    agent_service_pb2.HeartbeatRequest(attempt_id=attempt.id, token=secret, running=True)
                )
                stop.wait(0.5)

        beating = threading.Thread(target=beat, daemon=True)
        beating.start()
        try:
            wait_until("the first replica heard the agent", lambda: lag(first, "ali-bj") < 2)
            # A heartbeat is news for the whole front door: an alert on the other replica's
            # lag must not fire for an instance that reports every half second.
            wait_until("the second replica knows the agent is alive", lambda: lag(second, "ali-bj") < 2)
        finally:
            stop.set()
            beating.join(timeout=10)
