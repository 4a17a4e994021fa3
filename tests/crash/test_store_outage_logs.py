"""The broker's log while its store is out (PostgreSQL refusing connections, a full disk).

Found by running `szb serve` with three running jobs through a store outage: with PostgreSQL
refusing connections for 8 s the broker wrote 1187 lines, a 32-line "dispatch pass failed"
traceback about every 0.2 s; with its data dir's disk full for 8 s it wrote "polling <attempt>
failed: the store cannot be written" 91 times, once per attempt per poll, onto the full disk.
Now the first failure of each kind is logged, repeats are counted into at most one line a
minute, and one line says when the store is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from broker.api import broker_service_pb2_grpc, job_pb2
from broker.clock import ManualClock
from broker.store import StoreUnavailable
from broker.store_outage import StoreOutageLog
from tests.brokerproc import JOB_PYTHON, BrokerProcess
from tests.crash.test_disk_full import _fill, _ledger
from tests.e2e.conftest import write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.ha.test_store_outage import refusing

BACK = "the store is available again"


def _until(broker: BrokerProcess, since: int, what: Callable[[str], bool], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not what(text := "".join(broker.output[since:])):
        assert time.monotonic() < deadline, f"timed out; the broker logged:\n{text[-3000:]}"
        time.sleep(0.2)
    return text


def _running(broker: BrokerProcess, n: int, until: Path) -> list[str]:
    """`n` jobs running; they end once `until` exists. Returns their ids."""
    code = f"import os, time\nwhile not os.path.exists({str(until)!r}): time.sleep(0.05)\n"
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        jobs = [submit(stub, spec(f"waiter-{i}", [JOB_PYTHON, "-c", code])).job for i in range(n)]
        for job in jobs:
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
    return [job.id for job in jobs]


def _ended(broker: BrokerProcess, job_ids: list[str]) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        for job_id in job_ids:
            wait_for(stub, job_id, TERMINAL)


def test_postgres_refusing_connections_is_one_line_and_its_return_another(
    tmp_path: Path, pg_dsn: str, pg_server: str
) -> None:
    config = write_broker_config(tmp_path)
    config.write_text(config.read_text() + f"store: {{dsn: '{pg_dsn}'}}\n")
    broker = BrokerProcess(config)
    broker.start()
    try:
        _, folder = _ledger()  # (one the jobs' user can read)
        jobs = _running(broker, 3, until=folder / "go")
        since = len(broker.output)
        database = str(conninfo_to_dict(pg_dsn)["dbname"])
        with psycopg.connect(pg_server, autocommit=True) as admin, refusing(admin, database):
            _until(broker, since, lambda t: "store is unavailable" in t)
            time.sleep(5)  # many passes and polls meet the outage meanwhile
        text = _until(broker, since, lambda t: BACK in t)
        (folder / "go").touch()
        _ended(broker, jobs)
    finally:
        broker.stop()
    assert "Traceback" not in text and "dispatch pass failed" not in text, text[:3000]
    assert text.count("store is unavailable") == 1, text
    assert text.count(BACK) == 1 and "not currently accepting connections" in text, text


def test_a_full_disk_is_one_line_not_one_per_attempt_per_poll(small_disk: Path, tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    try:
        _, folder = _ledger()
        jobs = _running(broker, 3, until=folder / "go")
        since = len(broker.output)
        filler = _fill(small_disk)
        try:
            (folder / "go").touch()  # the jobs end while the disk is full: their ends cannot be recorded
            _until(broker, since, lambda t: "store is unavailable" in t)
            time.sleep(5)  # many polls meet the full disk meanwhile
        finally:
            filler.unlink()
        text = _until(broker, since, lambda t: BACK in t)
        _ended(broker, jobs)
    finally:
        broker.stop()
    assert "polling" not in text.replace("polling attempts: the store is unavailable", ""), text
    assert text.count("store is unavailable") == 1 and text.count(BACK) == 1, text


def test_repeats_are_counted_into_one_line_a_minute_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    outage = StoreOutageLog(logging.getLogger("test.outage"), clock)
    full = StoreUnavailable("the store cannot be written: database or disk is full")
    with caplog.at_level(logging.WARNING, "test.outage"):
        for _ in range(120):  # two minutes of polls of two attempts, a pass every second
            outage.failed("polling attempts", full)
            outage.failed("polling attempts", full)
            outage.failed("dispatch pass", full)
            clock.advance(timedelta(seconds=1))
        outage.ok("dispatch pass")  # passes go through, polls still fail: not back yet
        outage.failed("polling attempts", full)
        outage.ok("polling attempts")
        outage.ok("polling attempts")
    first = " (repeats are counted, one line a minute)"
    assert [r.getMessage() for r in caplog.records] == [
        "polling attempts: the store is unavailable: " + str(full) + first,
        "dispatch pass: the store is unavailable: " + str(full) + first,
        "polling attempts: the store is still unavailable: " + str(full) + " (120 failures in the last 60 s)",
        "dispatch pass: the store is still unavailable: " + str(full) + " (60 failures in the last 60 s)",
        "polling attempts: the store is still unavailable: " + str(full) + " (120 failures in the last 60 s)",
        "the store is available again after 120 s out (361 failures)",
    ]
