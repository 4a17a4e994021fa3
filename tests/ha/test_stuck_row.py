"""A write stuck mid-transaction elsewhere holds one job's row: only calls on that job wait, briefly.

Found by a held-out review of issue 13: a scheduler frozen inside a fenced write (SIGSTOP between
its fence check and its commit) held a job's row; the replica's CancelJob of that job waited on
it, and with it every other call of the replica (one store connection behind one lock): GetJob,
SubmitJob and ListJobs of other jobs all hit their deadlines until the scheduler was resumed.
Simulated as the review did, by an outside session holding what a fenced transition holds.
Real `szb serve --role api` on the real PostgreSQL.
"""

from __future__ import annotations

import threading
import time

import grpc
import psycopg

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.e2e.conftest import PY, auth
from tests.ha.conftest import Cluster


def _spec(name: str) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name=name, command=[PY, "-c", "pass"])
    spec.runtime_estimate.seconds = 60
    return spec


def test_a_row_held_by_a_stuck_session_holds_up_only_calls_on_that_job(cluster: Cluster) -> None:
    replica = cluster.start("api")  # no scheduler: the jobs stay queued
    with grpc.insecure_channel(replica.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        team = auth("team-a")
        victim = stub.SubmitJob(pb.SubmitJobRequest(job=_spec("victim")), metadata=team).job.id
        other = stub.SubmitJob(pb.SubmitJobRequest(job=_spec("other")), metadata=team).job.id
        with psycopg.connect(cluster.dsn) as stuck:
            stuck.execute("SELECT 1 FROM leadership WHERE id = 1 FOR SHARE").fetchall()
            stuck.execute("SELECT state FROM jobs WHERE id = %s FOR UPDATE", (victim,)).fetchall()
            outcome: list[grpc.StatusCode] = []

            def cancel_victim() -> None:
                try:
                    stub.CancelJob(pb.CancelJobRequest(id=victim), metadata=team, timeout=30)
                    outcome.append(grpc.StatusCode.OK)
                except grpc.RpcError as err:
                    outcome.append(err.code())

            cancelling = threading.Thread(target=cancel_victim)
            cancelling.start()
            time.sleep(0.5)
            # Calls on other jobs are answered while the victim's row stays held.
            got = stub.GetJob(pb.GetJobRequest(id=other), metadata=team, timeout=10).job
            assert got.state == job_pb2.JOB_STATE_QUEUED
            stub.SubmitJob(pb.SubmitJobRequest(job=_spec("new")), metadata=team, timeout=10)
            assert stub.ListJobs(pb.ListJobsRequest(page_size=10), metadata=team, timeout=10).jobs
            cancelling.join(timeout=30)
            # The call on the held row is refused as retryable, not left hanging.
            assert outcome == [grpc.StatusCode.UNAVAILABLE], outcome
            stuck.rollback()
        # Once the row is free, the cancel goes through.
        done = stub.CancelJob(pb.CancelJobRequest(id=victim), metadata=team, timeout=10).job
        assert done.state == job_pb2.JOB_STATE_CANCELLED


def test_max_queued_jobs_holds_across_api_replicas(cluster: Cluster) -> None:
    """Found by a held-out review of issue 13: each replica cached the tenant's unfinished count
    for a second and added only its own new jobs, so 12 submits one at a time, alternating
    between two replicas, stored 9 jobs for a limit of 5."""
    policy = cluster.config.parent / "policy.yaml"
    team_b = "- {id: team-b, kind: institute, entity_country: CN}"
    assert team_b in policy.read_text()
    policy.write_text(policy.read_text().replace(
        team_b, "- {id: team-b, kind: institute, entity_country: CN, limits: {max_queued_jobs: 5}}"
    ))
    replicas = [cluster.start("api"), cluster.start("api")]  # no scheduler: the jobs stay queued
    accepted = 0
    for k in range(12):
        with grpc.insecure_channel(replicas[k % 2].address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            try:
                stub.SubmitJob(pb.SubmitJobRequest(job=_spec(f"q{k}")), metadata=auth("team-b"), timeout=10)
                accepted += 1
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert accepted == 5
    with psycopg.connect(cluster.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE tenant = 'team-b'").fetchone()
    assert row is not None and row[0] == 5
