"""Role `all` on PostgreSQL dispatches alone: elected and fenced like a scheduler.

Found by a held-out review of issue 13: two default `szb serve` processes (role `all`) on one
database, each with its own data dir as on two hosts (or `all` beside an elected `scheduler`,
which is the compose file's HA profile with SZB_ROLE left at its default), both dispatched,
each took the other's attempts for lost, and every job ran five times and FAILED. Real
`szb serve` processes on the real PostgreSQL.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.clouds.e2e_helpers import md
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.e2e.conftest import PY, auth
from tests.ha.cloud import A10, cloud_cluster, gpu_spec, wait_until
from tests.ha.conftest import LEASE_S, Cluster, Node

TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def _run_job(node: Node) -> job_pb2.Job:
    """A short job, submitted to `node`; waits for its end."""
    spec = job_pb2.JobSpec(name="once", command=[PY, "-c", "print('ran')"])
    spec.runtime_estimate.seconds = 60
    with grpc.insecure_channel(node.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a")).job
        deadline = time.monotonic() + 90
        while job.state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
            job = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job
    return job


def test_a_second_all_process_on_the_database_refuses_to_start(cluster: Cluster, tmp_path: Path) -> None:
    first = cluster.start("all")
    second = Node(cluster.config, "all", {"SZB_DATA_DIR": str(tmp_path / "second-host")})
    cluster.nodes.append(second)
    try:
        second.start(timeout=60)
        refused = False
    except RuntimeError:
        refused = True
    assert refused, "a second role-all process started beside the first:\n" + second.text()
    assert second.proc is not None and second.proc.wait(timeout=30) == 1
    assert "already dispatches for this database" in second.text(), second.text()
    # The first goes on alone: a job runs there once.
    job = _run_job(first)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert job.attempts == 1 and job.log_tail.strip() == "ran"


def test_an_all_process_whose_lease_a_standby_took_stops_itself(cluster: Cluster, tmp_path: Path) -> None:
    alone = cluster.start("all")
    standby = cluster.start("scheduler", {"SZB_DATA_DIR": str(tmp_path / "standby-host")})
    time.sleep(LEASE_S)
    assert not standby.leading(), "the standby led while the all process held the lease"
    alone.pause()
    try:
        cluster.leader(timeout=60, among=[standby])
    finally:
        alone.resume()
    assert alone.proc is not None and alone.proc.wait(timeout=30) == 1, alone.text()
    assert "the scheduler lease was lost" in alone.text() and "holds it now" in alone.text(), alone.text()


class _KeyLog:
    """The ECS double's handler, noting whose access key each call was signed with."""

    def __init__(self, inner: EcsCloud) -> None:
        self.inner = inner
        self.keys: list[str] = []

    def __call__(self, req: Any) -> Any:
        self.keys.append(req.access_key_id)
        return self.inner(req)


def test_an_all_process_deposed_after_a_policy_reload_calls_no_backend(tmp_path: Path, pg_dsn: str) -> None:
    """Found by a held-out HA review: a policy reload rebuilt a changed cloud site's adapter
    without the lease guard in role `all` on PostgreSQL (a `scheduler` re-wraps it), so once
    paused past its lease and replaced, the resumed process still called that site."""
    endpoint = EcsEndpoint.start(credentials={"ak-all": "sk-test", "ak-standby": "sk-test"})
    log = _KeyLog(EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",)))
    endpoint.handler = log
    folder = tmp_path / "broker"
    own_key = "access_key_id_from_env: SZB_TEST_AK"  # (each process signs with its own key)
    cluster = cloud_cluster(folder, pg_dsn, endpoint.address, access_key=own_key)
    try:
        alone = cluster.start("all", {"SZB_TEST_AK": "ak-all"})
        other_host = {"SZB_TEST_AK": "ak-standby", "SZB_DATA_DIR": str(tmp_path / "standby-host")}
        standby = cluster.start("scheduler", other_host)
        with grpc.insecure_channel(alone.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            stub.SubmitJob(pb.SubmitJobRequest(job=gpu_spec("polled")), metadata=md())
            # Its instance runs (no agent reports): the process polls it at the site.
            wait_until("the instance started", lambda: bool(log.inner.user_data), timeout=60)
        # A new catalog for the site: the reload builds its adapter again.
        (folder / "ali-bj2.csv").write_text((folder / "ali-bj.csv").read_text().replace("13.90", "13.80"))
        policy = folder / "policy.yaml"
        policy.write_text(policy.read_text().replace("file: ali-bj.csv", "file: ali-bj2.csv"))
        assert alone.proc is not None
        alone.proc.send_signal(signal.SIGHUP)
        rebuilt = "adapter built for the reloaded policy"
        wait_until("the adapter was rebuilt", lambda: rebuilt in alone.text(), timeout=60, shown=alone.text)
        time.sleep(1.0)  # (its polls go through the rebuilt adapter now)
        alone.pause()
        try:
            cluster.leader(timeout=60, among=[standby])
            seen = len(log.keys)
        finally:
            alone.resume()
        assert alone.proc.wait(timeout=30) == 1, alone.text()
        deposed = [k for k in log.keys[seen:] if k == "ak-all"]
        assert not deposed, f"{len(deposed)} call(s) from the deposed process:\n{alone.text()[-3000:]}"
    finally:
        for node in cluster.nodes:
            if node.running():
                node.resume()
            node.stop()
        endpoint.stop()
