"""A job kept queued by a fair-share hold says so (`szb get`, live explain), on a real broker.

team-a runs on 2 of the 4 A800s; team-b's 4-GPU job, under its share, waits and holds the 2 free
ones; team-a's 1-GPU job stays queued for it. Its stored reason gave only a projected wait
("waiting on-prem: expected wait ..."), as if no A800 were free, and never named the hold.
"""

from __future__ import annotations

import time
from pathlib import Path

from broker.api import job_pb2
from tests.brokerproc import running_broker, stub_for
from tests.e2e.conftest import write_broker_config
from tests.ha.test_replica_explain_fair import (
    HELD,
    a_held_job_is_named,
    cancel_all,
    check_held,
    hold_one,
    state,
    submit,
)


def test_a_held_job_names_the_hold(tmp_path: Path) -> None:
    with running_broker(write_broker_config(tmp_path / "broker")) as broker, stub_for(broker.address) as stub:
        a_held_job_is_named(stub)


def test_the_hold_stays_with_the_head_through_full_passes(tmp_path: Path) -> None:
    """Each waiter of a pass over the whole queue took the partition's hold over, so it named the
    pass's last waiter, not its head: team-a's own 1-GPU job, for which a new job of team-a was
    said to be kept (and new-jobs passes kept other tenants' jobs off 1 unit, not team-b's 4)."""
    config = write_broker_config(tmp_path / "broker")
    config.write_text(config.read_text().replace(
        "dispatch: {poll_interval_s: 0.2}", "dispatch: {poll_interval_s: 0.2, requeue_scan_s: 0.5}"))
    with running_broker(config) as broker, stub_for(broker.address) as stub:
        started: list[tuple[str, str]] = []
        try:
            big, small = hold_one(stub, started)
            check_held(stub, big, small, 30)
            time.sleep(2)  # (passes over the whole queue decide both waiters again meanwhile)
            late = submit(stub, started, "late", 1, 60, "team-a")
            deadline = time.monotonic() + 30
            while (job := state(stub, late, "team-a")).state == job_pb2.JOB_STATE_QUEUED and (
                HELD not in job.message
            ):
                assert time.monotonic() < deadline, job.message
                time.sleep(0.2)
            assert job.state == job_pb2.JOB_STATE_QUEUED, job.message
        finally:
            cancel_all(stub, started)
