"""Role `all` on PostgreSQL dispatches alone: elected and fenced like a scheduler.

Found by a held-out review of issue 13: two default `szb serve` processes (role `all`) on one
database, each with its own data dir as on two hosts (or `all` beside an elected `scheduler`,
which is the compose file's HA profile with SZB_ROLE left at its default), both dispatched,
each took the other's attempts for lost, and every job ran five times and FAILED. Real
`szb serve` processes on the real PostgreSQL.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.e2e.conftest import PY, auth
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
