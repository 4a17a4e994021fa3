"""A cloud attempt's spend is settled even when the broker dies between closing it and settling.

Found by an acceptance review of issue 11: the attempt's end (with its job's) and its spend's
settlement are two writes; a broker killed (or a store failing) between them left the burst's
reservation standing for good, so the tenant's month counted the whole estimate (an hour here)
for a run of seconds. The gap is made deterministic in the database: a trigger refuses the
settlement while the job ends, then the broker is killed and restarted without it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import TERMINAL, Stub, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront


def until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def test_a_settlement_cut_short_is_made_after_the_restart(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    book = tmp_path / "ledger.jsonl"
    broker = make_broker()
    broker.start()
    db = sqlite3.connect(broker.config.parent / "data" / "broker.db", isolation_level=None, timeout=30)
    row = "SELECT settled, reserved, spent FROM spend WHERE job_id = ?"
    try:
        db.execute(
            "CREATE TRIGGER refuse_settling BEFORE UPDATE OF settled ON spend WHEN NEW.settled "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error (injected)'); END"
        )
        with Instances(moto, ecs, tmp_path / "instances") as instances:
            with grpc.insecure_channel(broker.address) as channel:
                stub = Stub(channel)
                job = submit(stub, job_spec("settle", "A10G", ledger.command(book, "s", 1.0)))
                final = wait_state(stub, job.id, TERMINAL)
                assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
            assert db.execute(row, (job.id,)).fetchone()[0] == 0  # the gap: ended, not settled
            broker.kill()
            db.execute("DROP TRIGGER refuse_settling")
            broker.restart()
            until(lambda: db.execute(row, (job.id,)).fetchone()[0] == 1, what="the spend was never settled")
            _, reserved, spent = db.execute(row, (job.id,)).fetchone()
            # Seconds of an A10G, not the hour the reservation held.
            assert 0 < spent < reserved / 20, (spent, reserved)
            until(lambda: not instances.running(), what="the instance stayed up")
    finally:
        db.close()
        broker.stop()
