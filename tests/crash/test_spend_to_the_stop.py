"""A burst whose result reached the broker only after its instance powered off is billed to the stop.

Found by running `test_a_result_that_could_never_be_delivered_is_read_from_the_console` with
the broker kept down after the instance stopped: the bootstrap gave up reporting and powered
the instance off, and the broker, back later, settled the attempt's spend up to its own
settlement time, billing every second it was down after the stop. EC2 says when the instance
stopped (`StateTransitionReason`); the spend is now settled to then.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import boto3
import grpc

from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import TERMINAL, Stub, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront

DOWN_AFTER_STOP_S = 20.0


def until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def _stopped_at(moto: MotoFront, instance_id: str) -> datetime | None:
    ec2 = boto3.client("ec2", endpoint_url=moto.url, region_name="us-east-1",
                       aws_access_key_id="AKIDTEST", aws_secret_access_key="test")
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    [inst] = [i for r in reservations for i in r["Instances"]]
    reason = inst["StateTransitionReason"]  # "User initiated (2026-12-03 10:00:00 UTC)"
    if "(" not in reason:
        return None
    return datetime.fromisoformat(reason.split("(", 1)[1].split(" UTC")[0] + "+00:00")


def test_a_burst_that_powered_off_while_the_broker_was_down_is_billed_to_its_stop(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    book = tmp_path / "ledger.jsonl"
    broker = make_broker(report_give_up_s=2)
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances") as instances:
        with grpc.insecure_channel(broker.address) as channel:
            job = submit(Stub(channel), job_spec("gives-up", "A10G", ledger.command(book, "g", 1.0)))
        until(lambda: ledger.runs(book).get("g") == ["start"], what="the instance never ran the job")
        broker.kill()
        until(lambda: ledger.runs(book).get("g") == ["start", "end"], what="the job never ended")
        until(lambda: not instances.running(), what="the bootstrap did not give up")
        [instance] = list(instances.booted)
        until(lambda: _stopped_at(moto, instance) is not None, what="the instance never stopped")
        stopped = _stopped_at(moto, instance)  # (the broker terminates it once back: a later change)
        assert stopped is not None
        time.sleep(DOWN_AFTER_STOP_S)  # the broker stays down well after the instance stopped
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            final = wait_state(Stub(channel), job.id, TERMINAL)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
    db = sqlite3.connect(broker.config.parent / "data" / "broker.db")
    try:
        until(lambda: db.execute("SELECT settled FROM spend WHERE job_id = ?", (job.id,)).fetchone()[0] == 1)
        row = "SELECT reserved, spent FROM spend WHERE job_id = ?"
        reserved, spent = db.execute(row, (job.id,)).fetchone()
        [(created,)] = db.execute("SELECT created_at FROM attempts WHERE job_id = ?", (job.id,)).fetchall()
    finally:
        db.close()
    ran_s = (stopped - datetime.fromtimestamp(created, UTC)).total_seconds()
    per_s = reserved / 3600  # the reservation holds the one-hour estimate at the same price
    # Billed to the stop (EC2 gives it to the second), not to the settlement 20 s or more later.
    assert per_s * (ran_s - 3) * 0.99 <= spent <= per_s * (ran_s + 3), (spent, per_s * ran_s, ran_s)
