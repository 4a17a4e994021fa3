"""A cancel through an API replica of a job whose run already ended keeps the job's result.

Found in issue 13's split: the replica, which calls no backend, recorded every cancel as CANCELLED
at once. A local job that had finished (its exit code written, not yet read: the scheduler
between its polls, or down) then ended CANCELLED while its attempt said SUCCEEDED, where the
one-process broker answers "had already ended" and keeps SUCCEEDED. The replica now records a
cancel request; the scheduler, which can ask the backend, settles it. Real `szb serve --role ...`
processes on the real PostgreSQL, a real local job.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import JobEvent, JobId
from broker.store import AuditFilter, PostgresStore
from tests.brokerproc import szb
from tests.e2e.conftest import PY, TOKENS, auth
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.ha.cloud import attempts, wait_until
from tests.ha.conftest import Cluster

TEAM = auth("team-a")


def _cluster(tmp_path: Path, dsn: str, poll_s: float) -> Cluster:
    cluster = Cluster(tmp_path / "broker", dsn)
    text = cluster.config.read_text()
    assert "poll_interval_s: 0.2" in text
    cluster.config.write_text(text.replace("poll_interval_s: 0.2", f"poll_interval_s: {poll_s}"))
    return cluster


def _ended_at_the_backend(cluster: Cluster, job_id: str) -> None:
    data = cluster.config.parent / "data" / "local"
    wait_until("the job's run ended", lambda: bool(list(data.glob(f"{job_id}-a*/exit_code"))), timeout=60)


def _stored(dsn: str, job_id: str) -> tuple[list[JobEvent], bool]:
    """The job's events, and whether a cancel request of it is still pending."""
    store = PostgresStore(dsn)
    try:
        return store.events_after(JobId(job_id), 0), store.cancel_request(JobId(job_id)) is not None
    finally:
        store.close()


def _kept_its_result(stub: broker_service_pb2_grpc.BrokerServiceStub, dsn: str, job_id: str) -> None:
    done = wait_for(stub, job_id, TERMINAL, timeout=60)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done
    assert done.exit_code == 0 and "42" in done.log_tail
    wait_until("the cancel is settled", lambda: not _stored(dsn, job_id)[1], timeout=30)
    kinds = [e.kind for e in _stored(dsn, job_id)[0]]
    assert "cancelled" not in kinds, kinds
    assert "cancel_requested" in kinds and "cancel_too_late" in kinds, kinds
    [late] = [e for e in _stored(dsn, job_id)[0] if e.kind == "cancel_too_late"]
    assert late.data.get("by") == "team-a" and "too late" in late.message
    assert [a.state.value for a in attempts(dsn, job_id)] == ["SUCCEEDED"]
    store = PostgresStore(dsn)
    try:  # the audit trail says who asked, and that it came too late
        audited = [e.kind for _, e in store.audit_events(AuditFilter(job_id=job_id))]
    finally:
        store.close()
    assert audited[-2:] == ["finished", "cancel_too_late"] and "cancel_requested" in audited, audited


def test_a_cancel_through_a_replica_between_the_schedulers_polls_keeps_a_finished_jobs_result(
    tmp_path: Path, pg_dsn: str
) -> None:
    cluster = _cluster(tmp_path, pg_dsn, poll_s=30)  # the scheduler reads results every 30 s
    try:
        api = cluster.start("api")
        cluster.start("scheduler")
        cluster.leader()
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec("quick", [PY, "-c", "print(42)"], runtime_s=60)).job
            _ended_at_the_backend(cluster, job.id)
            got = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=TEAM).job
            assert got.state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING)  # not read yet
            cancelled = szb(api, TOKENS["team-a"], "cancel", job.id)
            assert cancelled.returncode == 0, cancelled.stderr
            # The scheduler, woken, usually settles it within the answer's wait; a loaded box may not.
            assert (f"{job.id} had already ended (SUCCEEDED): nothing cancelled" in cancelled.stderr
                    or f"cancel of {job.id} requested" in cancelled.stderr), cancelled.stderr
            _kept_its_result(stub, pg_dsn, job.id)
    finally:
        cluster.stop()


def test_a_cancel_through_a_replica_while_no_scheduler_runs_waits_for_one_and_keeps_the_result(
    tmp_path: Path, pg_dsn: str
) -> None:
    cluster = _cluster(tmp_path, pg_dsn, poll_s=0.2)
    try:
        api = cluster.start("api")
        scheduler = cluster.start("scheduler")
        cluster.leader()
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            code = "import time; time.sleep(3); print(42)"
            job = submit(stub, spec("ends-alone", [PY, "-c", code], runtime_s=60)).job
            started = lambda: any(a.backend_id for a in attempts(pg_dsn, job.id))  # noqa: E731
            wait_until("the scheduler started it", started, timeout=60, shown=scheduler.text)
            scheduler.kill()  # the local run goes on without it, and ends
            _ended_at_the_backend(cluster, job.id)
            answer = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=TEAM).job
            # Nobody can ask the backend: the cancel is only requested, and said to be.
            assert answer.state in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING), answer
            assert "cancel requested by team-a" in answer.message
            again = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=TEAM).job
            assert again.state == answer.state
            assert [e.kind for e in _stored(pg_dsn, job.id)[0]].count("cancel_requested") == 1
            watched: list[job_pb2.JobEvent] = []
            watch = stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=TEAM, timeout=120)
            watcher = threading.Thread(target=lambda: watched.extend(r.event for r in watch))
            watcher.start()
            cluster.start("scheduler")
            _kept_its_result(stub, pg_dsn, job.id)
            watcher.join(timeout=120)
        # The watch, live through the end, ends on the scheduler's word that the cancel came too late.
        kinds = [e.kind for e in watched]
        assert kinds[-1] == "cancel_too_late" and "cancelled" not in kinds, kinds
        assert watched[-1].state == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        cluster.stop()


def test_a_cancel_through_a_replica_of_a_job_still_running_cancels_it(tmp_path: Path, pg_dsn: str) -> None:
    cluster = _cluster(tmp_path, pg_dsn, poll_s=0.2)
    try:
        api = cluster.start("api")
        cluster.start("scheduler")
        cluster.leader()
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec("sleeper", [PY, "-c", "import time; time.sleep(600)"])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING}, timeout=60)
            started = time.monotonic()
            stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=TEAM)
            done = wait_for(stub, job.id, TERMINAL, timeout=30)
            assert done.state == job_pb2.JOB_STATE_CANCELLED, done
            assert time.monotonic() - started < 20
        wait_until("the attempt is closed", lambda: attempts(pg_dsn, job.id)[-1].state.terminal, timeout=30)
        assert attempts(pg_dsn, job.id)[-1].state.value == "CANCELLED"
        events, pending = _stored(pg_dsn, job.id)
        [cancelled] = [e for e in events if e.kind == "cancelled"]
        assert cancelled.data.get("by") == "team-a" and not pending
    finally:
        cluster.stop()
