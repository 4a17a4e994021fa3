"""Issue 13, roles and election: `szb serve --role api|scheduler` on PostgreSQL; exactly one
scheduler is active (advisory lock + lease), a standby takes over when the leader dies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.api import agent_service_pb2, agent_service_pb2_grpc, broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from broker.ha.scheduler import LEADER_HEALTH
from tests.brokerproc import JOB_PYTHON, ROOT, szb
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.ha.conftest import LEASE_S, Cluster, Node

TAKEOVER_BOUND_S = 30.0
"""Far above the 5 s target (measured in bench/ha.py): a loaded test machine must not flake."""


def lease_row(dsn: str) -> tuple[str, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT holder, holder_pid, epoch FROM leadership").fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def run_job(address: str, name: str) -> job_pb2.Job:
    with grpc.insecure_channel(address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = submit(stub, spec(name, [JOB_PYTHON, "-c", f"print('{name}')"])).job
        return wait_for(stub, job.id, TERMINAL, timeout=60)


def test_two_schedulers_elect_exactly_one_and_it_runs_the_jobs_the_api_accepts(cluster: Cluster) -> None:
    api = cluster.start("api")
    first, second = cluster.start("scheduler"), cluster.start("scheduler")
    leader = cluster.leader()
    standby = second if leader is first else first
    time.sleep(LEASE_S * 2)  # several renewals: still the same single leader
    assert cluster.leader() is leader and not standby.leading()
    holder, _, epoch = lease_row(cluster.dsn)
    assert f":{leader.pid}:" in holder and epoch == leader.epochs()[-1]
    done = run_job(api.address, "elected")
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED and "elected" in done.log_tail
    assert not standby.epochs(), "the standby was never elected"
    # Readiness: the scheduler health service is SERVING on the leader only; both are live.
    assert health(leader, LEADER_HEALTH) == health_pb2.HealthCheckResponse.SERVING
    assert health(standby, LEADER_HEALTH) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(standby, "") == health_pb2.HealthCheckResponse.SERVING


def health(node: Node, service: str) -> int:
    with grpc.insecure_channel(node.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status)


def test_a_standby_takes_over_after_the_leader_is_killed(cluster: Cluster) -> None:
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.start("scheduler")
    old = cluster.leader()
    old_epoch = old.epochs()[-1]
    old.kill()
    killed = time.monotonic()
    new = cluster.leader(timeout=TAKEOVER_BOUND_S)
    took = time.monotonic() - killed
    print(f"takeover after SIGKILL: {took:.2f}s")
    assert new is not old and new.epochs()[-1] > old_epoch
    assert took < TAKEOVER_BOUND_S
    done = run_job(api.address, "after-takeover")
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED


def serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_split_roles_refuse_to_start_without_postgresql(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("listen: 127.0.0.1:0\ndata_dir: data\n")
    for role in ("api", "scheduler"):
        result = serve(config, "--role", role)
        assert result.returncode == 1
        assert f"role '{role}' needs a PostgreSQL store" in result.stderr
        assert not (tmp_path / "data" / "broker.db").exists()


def test_a_bad_role_in_broker_yaml_is_reported_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("listen: 127.0.0.1:0\ndata_dir: data\nrole: leader\n")
    result = serve(config)
    assert result.returncode == 1
    assert f"{config}:3:1: role:" in result.stderr and "'scheduler'" in result.stderr


OPERATOR = "token-ha-operator-0123456789"


def replica_status(api: Node, table: bool = False) -> Any:
    """`szb status` on one API replica as an operator (JSON, or the table as printed)."""
    out = szb(api, OPERATOR, "status", *([] if table else ["-o", "json"]))
    assert out.returncode == 0, out.stderr
    return out.stdout if table else json.loads(out.stdout)


def test_szb_status_on_every_replica_names_the_active_scheduler(cluster: Cluster) -> None:
    tokens = cluster.config.parent / "tokens.yaml"
    operator = f"  - {{tenant: ops, role: operator, sha256: {hash_token(OPERATOR)}}}\n"
    tokens.write_text(tokens.read_text() + operator)
    replicas = [cluster.start("api"), cluster.start("api")]
    # Review: with no scheduler ever started, status had no Scheduler line at all.
    assert "Scheduler: none has ever been elected" in replica_status(replicas[0], True)
    assert replica_status(replicas[0])["scheduler"]["expired"] is True
    cluster.start("scheduler")
    cluster.start("scheduler")
    old = cluster.leader()
    for api in replicas:
        lease = replica_status(api)["scheduler"]
        assert f":{old.pid}:" in lease["holder"] and lease["epoch"] == old.epochs()[-1], lease
        assert lease["expired"] is False
        named = rf"Scheduler: \S+:{old.pid}:\S+ \(epoch {old.epochs()[-1]}\) leads"
        assert re.search(named, replica_status(api, True))
    old.kill()
    new = cluster.leader(timeout=TAKEOVER_BOUND_S, among=[n for n in cluster.nodes if n is not old])
    for api in replicas:
        lease = replica_status(api)["scheduler"]
        assert f":{new.pid}:" in lease["holder"] and lease["epoch"] == new.epochs()[-1], lease
    new.pause()  # no standby left: once its lease runs out, no scheduler is active
    try:
        time.sleep(LEASE_S + 0.5)
        for api in replicas:
            assert replica_status(api)["scheduler"]["expired"] is True
            assert "Scheduler: none active" in replica_status(api, True)
    finally:
        new.resume()


def test_szb_pointed_at_a_scheduler_says_to_use_an_api_replica(cluster: Cluster) -> None:
    scheduler = cluster.start("scheduler")
    cluster.leader()
    out = szb(scheduler, OPERATOR, "status")
    assert out.returncode != 0
    gone = "" if scheduler.running() else f"exited: {scheduler.proc and scheduler.proc.returncode}"
    seen = (gone, scheduler.text()[-2000:])
    assert "role scheduler" in out.stderr and "--role api" in out.stderr, (*seen, out.stderr)
    watched = szb(scheduler, OPERATOR, "watch", "j-00000000000000000000")  # a server stream
    assert watched.returncode != 0 and "role scheduler" in watched.stderr, watched.stderr
    with grpc.insecure_channel(scheduler.address) as channel:  # an agent sent to the wrong place
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        try:
            agent.Heartbeat(agent_service_pb2.HeartbeatRequest(), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNIMPLEMENTED and "API replicas" in (exc.details() or "")
        else:
            raise AssertionError("a scheduler answered an agent's heartbeat")
