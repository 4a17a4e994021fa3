"""A step of the broker's wall clock (NTP correcting a drifted host, a VM resumed) loses no job.

Found by a held-out review of issue 11: heartbeat silence was measured on the wall clock, so a
broker whose clock stepped forward past `burst.heartbeat_timeout` took every running cloud
attempt for silent, read no result from its console (the job was still running), called it
lost, terminated its instance and ran the job again; and blocks and breakers ran out on the wall
clock, so a step back by an hour held a stock-out's 15 s block for an hour longer. The broker runs
here under libfaketime (the `faketime` package), its wall clock moved while its monotonic clock
keeps going, as NTP does; the instances and the test keep the true time.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import TERMINAL, Stub, events, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.crash.test_results_survive import until
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def faked_clock(offset_file: Path) -> dict[str, str]:
    """The environment that runs a process on a wall clock `offset_file` moves ("+600" = +600 s)."""
    if not LIBFAKETIME.exists():
        pytest.skip("libfaketime is not installed (scripts/system-deps.sh installs faketime)")
    offset_file.write_text("+0\n")
    return {
        "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1",
    }


def test_a_wall_clock_step_forward_loses_no_running_cloud_job(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    book = tmp_path / "ledger.jsonl"
    offset = tmp_path / "clock-offset"
    broker = make_broker(heartbeat_timeout="30s")
    broker.extra_env = faked_clock(offset)
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances") as instances:
        with grpc.insecure_channel(broker.address) as channel:
            stub = Stub(channel)
            job = submit(stub, job_spec("clock-step", "A10G", ledger.command(book, "j", 12.0)))
            until(lambda: ledger.runs(book).get("j") == ["start"], timeout=60, what="never started")
            wait_state(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            offset.write_text("+600\n")  # ten minutes ahead at once, heartbeats still coming
            final = wait_state(stub, job.id, TERMINAL, timeout=90)
            kinds = [e.kind for e in events(stub, job.id)]
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 1, (final.message, kinds)
            assert "lost" not in kinds, kinds
        until(lambda: not instances.running(), what="the instance stayed up after its result was taken")
    assert ledger.runs(book)["j"] == ["start", "end"]


def test_a_wall_clock_step_back_does_not_prolong_a_stock_out_block(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """A zone's stock-out blocks the offer for `blocklist_ttl.capacity`; a step of the clock back by
    an hour must not hold the block (or a breaker) an hour longer."""
    book = tmp_path / "ledger.jsonl"
    offset = tmp_path / "clock-offset"
    broker = make_broker()
    policy = broker.config.parent / "policy.yaml"
    ttl = "  blocklist_ttl: {capacity: 15s}\n  heartbeat_timeout:"
    policy.write_text(policy.read_text().replace("  heartbeat_timeout:", ttl))
    broker.extra_env = faked_clock(offset)
    ecs.sold_out = {("cn-beijing-i", "ecs.gn7i-c8g1.2xlarge")}
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances") as instances:
        with grpc.insecure_channel(broker.address) as channel:
            stub = Stub(channel)
            spec = job_spec("stock-out", "A10", ledger.command(book, "s", 1.0), max_wait_s=7200)
            job = submit(stub, spec)
            until(lambda: broker.said("blocked", timeout=0.1), timeout=60, what="no stock-out block")
            ecs.sold_out = set()
            offset.write_text("-3600\n")  # an hour back at once
            final = wait_state(stub, job.id, TERMINAL, timeout=90)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
        until(lambda: not instances.running(), what="the instance stayed up after its result was taken")
    assert ledger.runs(book)["s"] == ["start", "end"]
