"""The store failing between a job's placement and its attempt (a database restart, a full disk).

Found by `tests/ha/test_store_outage.py` failing in CI: the scheduler had written the job
PLACING when PostgreSQL dropped its sessions, the pass raised before the attempt was recorded,
and the job stayed PLACING for good (only a restart requeued it). Here the failure is made
deterministic in the database itself: a trigger refuses every new attempt row while the job is
placed, then is dropped; the job must go back to the queue and run, with its unstarted attempt
closed.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import grpc
import psycopg

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.crash.ledger import command, runs
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.store.conftest import pg_dsn, pg_server

__all__ = ["pg_dsn", "pg_server"]


def test_a_job_placed_when_the_store_failed_is_requeued_and_runs(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    broker = BrokerProcess(config)
    broker.start()
    db = sqlite3.connect(config.parent / "data" / "broker.db", isolation_level=None, timeout=30)
    try:
        db.execute(
            "CREATE TRIGGER refuse_attempts BEFORE INSERT ON attempts "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error (injected)'); END"
        )
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec(f"placed-{uuid.uuid4().hex[:6]}", [PY, "-c", "print('ran')"])).job
            deadline = time.monotonic() + 60
            # Requeued: placed, and its attempt refused. Waiting only for `placed` let the trigger go
            # before a loaded broker had tried the attempt (CI): it ran with no failure to mend.
            requeued = "SELECT 1 FROM events WHERE job_id = ? AND kind = 'requeued'"
            while not db.execute(requeued, (job.id,)).fetchone():
                assert time.monotonic() < deadline, "the job was never placed, refused and requeued"
                time.sleep(0.2)
            db.execute("DROP TRIGGER refuse_attempts")
            done = wait_for(stub, job.id, TERMINAL, timeout=60)
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.message
            got = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job
            assert got.state == job_pb2.JOB_STATE_SUCCEEDED
        kinds = [k for (k,) in db.execute("SELECT kind FROM events WHERE job_id = ? ORDER BY seq", (job.id,))]
        assert "requeued" in kinds and kinds.count("attempt") == 1, kinds
        attempts = "SELECT state FROM attempts WHERE job_id = ? ORDER BY number"
        states = [s for (s,) in db.execute(attempts, (job.id,))]
        assert states[-1] == "SUCCEEDED" and all(s in ("SUCCEEDED", "CANCELLED") for s in states), states
    finally:
        db.close()
        broker.stop()


REFUSE_ATTEMPT_WRITES = """
CREATE SEQUENCE refused_attempt_writes;
CREATE FUNCTION refuse_attempt_writes() RETURNS trigger AS $$
BEGIN
  PERFORM nextval('refused_attempt_writes');  -- outside the transaction: the test sees it
  RAISE EXCEPTION 'could not extend file: No space left on device (injected)' USING ERRCODE = 'disk_full';
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_attempt_writes BEFORE UPDATE ON attempts
  FOR EACH ROW EXECUTE FUNCTION refuse_attempt_writes();
"""


def test_a_launch_whose_store_writes_fail_is_finished_once_the_store_takes_writes(
    tmp_path: Path, pg_dsn: str
) -> None:
    # Found by tests/ha/test_store_outage.py failing in CI: PostgreSQL went away while a launch
    # was in flight; the backend had started the job, the write of its backend id failed, so did
    # the write closing the attempt, and the launch's task died ("Task exception was never
    # retrieved"). The job stayed PROVISIONING for good, its finished run never read. Here the
    # database refuses every write to attempts (a full disk) from before the job is submitted.
    config = write_broker_config(tmp_path)
    config.write_text(config.read_text() + f"store: {{dsn: '{pg_dsn}'}}\n")
    ledger = tmp_path / "ledger"
    name = f"launch-{uuid.uuid4().hex[:6]}"
    broker = BrokerProcess(config)
    broker.start()
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as db, grpc.insecure_channel(broker.address) as channel:
            db.execute(REFUSE_ATTEMPT_WRITES)
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec(name, command(ledger, name, 0))).job
            deadline = time.monotonic() + 60
            refused = "SELECT last_value FROM refused_attempt_writes WHERE is_called"
            # The backend id's write and the next one (closing the attempt, on a broker that
            # gives the launch up) were both refused.
            while (row := db.execute(refused).fetchone()) is None or row[0] < 2:
                assert time.monotonic() < deadline, "the launch never wrote its attempt"
                time.sleep(0.2)
            db.execute("DROP TRIGGER refuse_attempt_writes ON attempts")
            done = wait_for(stub, job.id, TERMINAL, timeout=60)
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.message
            attempts = db.execute(
                "SELECT state, backend_id FROM attempts WHERE job_id = %s", (job.id,)
            ).fetchall()
        assert [state for state, _ in attempts] == ["SUCCEEDED"], attempts
        assert runs(ledger)[name] == ["start", "end"]  # once: the launch adopted what it had started
    finally:
        broker.stop()
