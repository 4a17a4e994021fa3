"""Issue 13 review: the PostgreSQL server itself stops for a while (an operator's restart, an
outage) under a running API replica and two scheduler candidates. Nothing acknowledged is lost,
nothing runs twice, and a scheduler leads again once the server is back."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import psycopg

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import TERMINAL, spec, wait_for
from tests.ha.conftest import Cluster
from tests.ha.pg_private import PrivateServer, private_pg

__all__ = ["private_pg"]


def _job(name: str, ledger: Path, sleep_s: float) -> job_pb2.JobSpec:
    # One file per run: each job runs under a uid of its own, so they cannot share one file.
    code = (
        f"import os, time; open(os.path.join({str(ledger)!r}, {name!r} + '.' + str(os.getpid())), 'w')"
        f"; time.sleep({sleep_s})"
    )
    return spec(name, [JOB_PYTHON, "-c", code])


def _database(server: PrivateServer) -> str:
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE szb_restart TEMPLATE template0")
    return server.dsn.rsplit("/", 1)[0] + "/szb_restart"


def test_a_server_stopped_for_thirty_seconds_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, private_pg: PrivateServer
) -> None:
    dsn = _database(private_pg)
    # Jobs run sandboxed as the job user, who cannot enter the test's private tmp folder.
    ledger = Path(tempfile.mkdtemp(prefix="szb-ran-"))
    ledger.chmod(0o1777)
    ha = Cluster(tmp_path / "broker", dsn)
    try:
        api = ha.start("api")
        ha.start("scheduler")
        ha.start("scheduler")
        ha.leader()
        with grpc.insecure_channel(api.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            reqs = [pb.SubmitJobRequest(job=_job(f"j{i}", ledger, 6), client_id=f"c{i}") for i in range(6)]
            ids = [stub.SubmitJob(r, metadata=auth("team-a")).job.id for r in reqs]
            deadline = time.monotonic() + 60
            while len(os.listdir(ledger)) < 2:
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.2)
            private_pg.stop()
            refused = 0
            for _ in range(10):
                try:
                    stub.SubmitJob(
                        pb.SubmitJobRequest(job=_job("during", ledger, 1)),
                        metadata=auth("team-a"),
                        timeout=10,
                    )
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                    refused += 1
                time.sleep(3)
            private_pg.start()
            # The client's retries of what it sent before the outage come back as the same jobs.
            again = [stub.SubmitJob(r, metadata=auth("team-a"), timeout=30) for r in reqs]
            assert [a.job.id for a in again] == ids and not any(a.created for a in again)
            later = stub.SubmitJob(pb.SubmitJobRequest(job=_job("later", ledger, 1)), metadata=auth("team-a"))
            finals = [wait_for(stub, j, TERMINAL, timeout=120) for j in [*ids, later.job.id]]
        ha.leader(timeout=30)  # one scheduler leads again
        assert [f.state for f in finals] == [job_pb2.JOB_STATE_SUCCEEDED] * 7, [
            (f.name, f.state, f.message) for f in finals
        ]
        ran = [name.split(".")[0] for name in os.listdir(ledger)]
        assert sorted(ran) == sorted([f"j{i}" for i in range(6)] + ["later"]), ran
        assert refused == 10
    finally:
        ha.stop()
        shutil.rmtree(ledger, ignore_errors=True)
