"""A reclaim's bookings are written to the store once, not again by every pass until they change.

The dispatcher stores the bookings before it preempts (`Scheduling._reclaim`), but that save
did not move fair share's mark of what it last saved, so the next pass with a fresh capacity
reading wrote the same state again. Real `szb serve` on the local executor; the writes are
counted by a trigger on the broker's own SQLite table of bookings.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.store import SqliteStore
from tests.brokerproc import BrokerProcess, stub_for, write_broker_folder
from tests.fairshare.test_reclaim_e2e import POLICY, TOKENS, auth, get, job, until

LOG = """\
CREATE TABLE booked_log (attempt_id TEXT NOT NULL, stopped INTEGER NOT NULL);
CREATE TRIGGER booked_written AFTER INSERT ON reclaim_booked
BEGIN INSERT INTO booked_log (attempt_id, stopped) VALUES (NEW.attempt_id, NEW.stopped); END;
"""
# A borrowed job that lets its 5 s grace run out (it ignores SIGTERM), and full passes every
# second meanwhile: each reads capacity afresh and saves fair share's state if it changed.
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.2)"


def written(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return [(str(a), int(s)) for a, s in conn.execute("SELECT attempt_id, stopped FROM booked_log")]


def test_a_reclaims_bookings_are_written_once_until_they_change(tmp_path: Path) -> None:
    config = write_broker_folder(tmp_path / "broker", POLICY, TOKENS)
    text = config.read_text()
    config.write_text(text.replace("poll_interval_s: 0.2}", "poll_interval_s: 0.2, requeue_scan_s: 1}"))
    assert config.read_text() != text
    db = config.parent / "data" / "broker.db"
    db.parent.mkdir()
    SqliteStore(db).close()  # the broker's schema, then the counting trigger on it
    with sqlite3.connect(db) as conn:
        conn.executescript(LOG)
    broker = BrokerProcess(config)
    broker.start()
    jobs: list[tuple[str, str]] = []
    try:
        with stub_for(broker.address) as stub:
            for i in range(4):
                spec = job(f"b{i}", STUBBORN)
                jobs.append((stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("borrower")).job.id,
                             "borrower"))
            running = lambda: all(get(stub, j, t).state == job_pb2.JOB_STATE_RUNNING for j, t in jobs)  # noqa: E731
            until(running, "the borrowed jobs run")
            mine = stub.SubmitJob(pb.SubmitJobRequest(job=job("mine", "pass")), metadata=auth("owner")).job.id
            jobs.append((mine, "owner"))
            until(lambda: any(stopped for _, stopped in written(db)), "the victim was seen stopped", 90)
        rows = written(db)
        booked = [a for a, stopped in rows if not stopped]
        assert booked, rows
        # Once when booked (before the preemption), once when seen stopped: on main, the booking
        # was written again by the passes in between, with nothing new.
        assert len(booked) == len(set(booked)), rows
    finally:
        with stub_for(broker.address) as stub:
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
        broker.stop()
