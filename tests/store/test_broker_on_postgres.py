"""The broker with `store: {dsn}` keeps its state in PostgreSQL, across a crash and restart."""

from __future__ import annotations

from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import JobState
from broker.store import PostgresStore
from tests.brokerproc import JOB_PYTHON, BrokerProcess
from tests.e2e.conftest import auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for


def test_jobs_and_events_live_in_postgres_and_survive_a_restart(tmp_path: Path, pg_dsn: str) -> None:
    config = write_broker_config(tmp_path)
    config.write_text(config.read_text() + f"store: {{dsn: '{pg_dsn}'}}\n")
    broker = BrokerProcess(config)
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        done = submit(stub, spec("on-postgres", [JOB_PYTHON, "-c", "print('hello pg')"])).job
        assert wait_for(stub, done.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
        again = submit(stub, spec("on-postgres", ["true"]), client_id="pg-retry")
        same = submit(stub, spec("on-postgres", ["true"]), client_id="pg-retry")
        assert same.job.id == again.job.id and not same.created
    broker.kill()
    assert not (tmp_path / "data" / "broker.db").exists(), "the SQLite file was used instead"

    store = PostgresStore(pg_dsn)
    try:
        job = store.get(done.id)
        assert job.state == JobState.SUCCEEDED and "hello pg" in job.log_tail
        assert store.events_after(job.id, 0)[0].kind == "submitted"
    finally:
        store.close()

    broker.restart()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            assert stub.GetJob(pb.GetJobRequest(id=done.id), metadata=auth("team-a")).job.exit_code == 0
            assert wait_for(stub, again.job.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        broker.stop()
