"""Issue 13, fencing: a leader paused (SIGSTOP) past its lease is replaced; when it resumes it
makes no write and no backend call, and steps down. Takeover with launches in flight leaves
exactly one instance per attempt and nothing behind."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.api import broker_service_pb2 as pb
from broker.model import JobId
from broker.store import PostgresStore
from tests.brokerproc import JOB_PYTHON
from tests.clouds.e2e_helpers import agent_secret_of, md, wait_state
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import TERMINAL, spec, wait_for
from tests.ha.cloud import SlowCloud, attempts, cloud_cluster, gpu_spec, wait_until
from tests.ha.conftest import Cluster, Node


def test_a_paused_leader_is_replaced_and_on_resuming_neither_writes_nor_dispatches(cluster: Cluster) -> None:
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.start("scheduler")
    old = cluster.leader()
    old_epoch = old.epochs()[-1]
    old.pause()
    try:
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            # Submitted while the leader sleeps: its listener's socket holds these wake-ups.
            reqs = [
                pb.SubmitJobRequest(job=spec(f"paused-{i}", [JOB_PYTHON, "-c", "pass"])) for i in range(4)
            ]
            ids = [
                r.job.id
                for r in stub.SubmitJobs(
                    pb.SubmitJobsRequest(requests=reqs), metadata=auth("team-a")
                ).responses
            ]
            new = cluster.leader(among=[n for n in cluster.nodes if n is not old])
            assert new.epochs()[-1] > old_epoch
            finals = [wait_for(stub, job_id, TERMINAL, timeout=60) for job_id in ids]
    finally:
        old.resume()
    # (a resumed process on a loaded CI machine may be scheduled late: a minute, not the default 30 s)
    wait_until(
        "the resumed leader stepped down",
        lambda: f"term {old_epoch} over" in old.text(),
        timeout=60,
        shown=old.text,
    )
    assert not old.leading() and new.leading()
    assert all(j.state == job_pb2.JOB_STATE_SUCCEEDED for j in finals), [j.message for j in finals]
    time.sleep(1.0)  # whatever the resumed process still had queued has had its chance to run
    store = PostgresStore(cluster.dsn)
    try:
        for job_id in ids:
            tried = store.attempts_for(JobId(job_id))
            assert len(tried) == 1, f"{job_id}: {[(a.id, a.state) for a in tried]}"
            assert store.get(job_id).state.value == "SUCCEEDED"
    finally:
        store.close()
    # Every scheduler write about these jobs carries the new term's epoch: none of the old one's.
    with psycopg.connect(cluster.dsn) as conn:
        epochs = {
            row[0]
            for row in conn.execute(
                "SELECT epoch FROM attempts WHERE job_id = ANY(%s) UNION "
                "SELECT epoch FROM events WHERE job_id = ANY(%s) AND epoch IS NOT NULL",
                (ids, ids),
            )
        }
    assert epochs == {new.epochs()[-1]}, epochs
    assert "attempt 1 on" not in old.text().split(f"term {old_epoch} over")[-1]


@pytest.fixture
def slow_ecs(ecs_server: EcsEndpoint) -> Iterator[tuple[EcsCloud, SlowCloud]]:
    cloud = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    # Longer than a takeover (the new leader acts a lease period, 2 s, after the old one's last
    # renewal): the killed leader's launches are still in flight when the new one resumes them.
    slow = SlowCloud(cloud, delay_s=4.0)
    ecs_server.handler = slow
    yield cloud, slow
    ecs_server.handler = EcsCloud()


def play_agents(dsn: str, api: Node, cloud: EcsCloud, ids: list[str], stop: threading.Event) -> None:
    """Each instance's bootstrap: once its attempt has an instance, report it ran and exited 0."""
    done: set[str] = set()
    with grpc.insecure_channel(api.address) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        while not stop.is_set() and len(done) < len(ids):
            for job_id in ids:
                tried = attempts(dsn, job_id)
                live = [a for a in tried if not a.state.terminal and a.backend_id in cloud.user_data]
                for a in live:
                    if a.id in done:
                        continue
                    assert a.backend_id is not None
                    secret = agent_secret_of(base64.b64decode(cloud.user_data[a.backend_id]).decode())
                    try:
                        agent.Heartbeat(
                            agent_service_pb2.HeartbeatRequest(attempt_id=a.id, token=secret, running=True)
                        )
                        agent.ReportExit(
                            agent_service_pb2.ReportExitRequest(attempt_id=a.id, token=secret, exit_code=0)
                        )
                        done.add(a.id)
                    except grpc.RpcError:
                        pass  # a secret replaced by a resumed launch: the next round reads the new one
            time.sleep(0.2)


def test_takeover_with_launches_in_flight_leaves_one_instance_per_attempt(
    tmp_path: Path, pg_dsn: str, ecs_server: EcsEndpoint, slow_ecs: tuple[EcsCloud, SlowCloud]
) -> None:
    cloud, slow = slow_ecs
    split = cloud_cluster(tmp_path / "broker", pg_dsn, ecs_server.address)
    try:
        api = split.start("api")
        split.start("scheduler")
        split.start("scheduler")
        old = split.leader()
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            reqs = [pb.SubmitJobRequest(job=gpu_spec(f"mid-launch-{i}")) for i in range(5)]
            ids = [
                r.job.id
                for r in stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=md()).responses
            ]
            wait_until("launches are in flight", lambda: len(slow.run_calls) >= 3)
            old.kill()  # mid-launch: RunInstances sent, no backend id stored yet
            new = split.leader(among=[n for n in split.nodes if n is not old])
            stop = threading.Event()
            agents = threading.Thread(target=play_agents, args=(pg_dsn, api, cloud, ids, stop), daemon=True)
            agents.start()
            try:
                finals = [wait_state(stub, job_id, TERMINAL, timeout=90) for job_id in ids]
            finally:
                stop.set()
                agents.join(timeout=10)
        assert all(j.state == job_pb2.JOB_STATE_SUCCEEDED for j in finals), [j.message for j in finals]
        assert any(n >= 2 for n in slow.run_calls.values()), "no launch was resumed by the new leader"
        tokens = {a.token: a for job_id in ids for a in attempts(pg_dsn, job_id) if a.backend_id}
        # Exactly one instance per attempt, however often its launch was sent (same ClientToken).
        assert all(len(cloud.tokens.get(token, [])) == 1 for token in tokens), cloud.tokens
        assert set(cloud.tokens) <= set(tokens) | {a.token for j in ids for a in attempts(pg_dsn, j)}
        assert sum(len(v) for v in cloud.tokens.values()) == len(tokens)
        wait_until("every finished instance was removed (no leak)", lambda: not cloud.instances, timeout=60)
        assert new.leading()
    finally:
        split.stop()
