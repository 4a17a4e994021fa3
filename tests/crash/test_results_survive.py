"""A finished job's result outlives the broker's downtime: never re-run, never lost.

Issue 11, obs. 1 and 2. The instances run the very UserData the broker gave them (see
`tests.crash.instances`); the job commands write a ledger of what really ran.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import MD, TERMINAL, Stub, events, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront
from tests.job_events import has

CLOUDS = {"aws-east": "A10G", "aliyun-bj": "A10", "lc-east": "T4"}


def until(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("site", ["aws-east"])  # every cloud meets this in the chaos test
def test_a_job_that_ends_while_the_broker_is_down_is_not_run_again(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Obs. 1: the bootstrap reported once, got 'connection refused', powered off; re-run."""
    book = tmp_path / "ledger.jsonl"
    broker = make_broker()
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances") as instances:
        with grpc.insecure_channel(broker.address) as channel:
            spec = job_spec("ends-in-downtime", CLOUDS[site], ledger.command(book, "j", 2.0))
            job = submit(Stub(channel), spec)
        until(lambda: ledger.runs(book).get("j") == ["start"], what="the instance never ran the job")
        broker.kill()
        until(lambda: ledger.runs(book).get("j") == ["start", "end"], what="the job never ended")
        time.sleep(2.0)  # the bootstrap keeps knocking on a closed door
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = Stub(channel)
            final = wait_state(stub, job.id, TERMINAL)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 1, final.message
            assert "j finished with 0" in final.log_tail
        until(lambda: not instances.running(), what="the instance stayed up after its result was taken")
    assert ledger.runs(book)["j"] == ["start", "end"]


@pytest.mark.parametrize("site", list(CLOUDS))
def test_a_result_that_could_never_be_delivered_is_read_from_the_console(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Obs. 1: past the give-up time the instance powers off; its result stays on the console."""
    book = tmp_path / "ledger.jsonl"
    broker = make_broker(report_give_up_s=2)
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances") as instances:
        with grpc.insecure_channel(broker.address) as channel:
            spec = job_spec("gives-up", CLOUDS[site], ledger.command(book, "g", 1.0, exit_code=3))
            job = submit(Stub(channel), spec)
        until(lambda: ledger.runs(book).get("g") == ["start"], what="the instance never ran the job")
        broker.kill()
        until(lambda: ledger.runs(book).get("g") == ["start", "end"], what="the job never ended")
        until(lambda: not instances.running(), what="the bootstrap did not give up")
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = Stub(channel)
            final = wait_state(stub, job.id, TERMINAL)
            assert final.state == job_pb2.JOB_STATE_FAILED and final.exit_code == 3, final.message
            assert final.attempts == 1 and "g finished with 3" in final.log_tail
            assert not [e for e in events(stub, job.id) if e.kind == "lost"]
    assert ledger.runs(book)["g"] == ["start", "end"]


def test_attempts_lost_in_the_brokers_downtime_never_throttle_the_route(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Obs. 2: five lost attempts throttled a healthy route for 15 minutes."""
    book = tmp_path / "ledger.jsonl"
    broker = make_broker()
    broker.start()
    names = [f"t{i}" for i in range(5)]
    with grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        jobs = [submit(stub, job_spec(f"throttle-{n}", "A10", ledger.command(book, n, 30))) for n in names]
        until(lambda: len(ecs.instances) == 5, what="five instances")
    broker.kill()
    # While the broker is down the instances vanish without leaving any result behind.
    for iid in list(ecs.instances):
        del ecs.instances[iid]
    broker.restart()
    with Instances(moto, ecs, tmp_path / "instances"), grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        until(lambda: all(_lost(stub, j.id) for j in jobs), what="the vanished attempts were not lost")
        later = submit(stub, job_spec("after-the-losses", "A10", ledger.command(book, "after", 0.2)))
        final = wait_state(stub, later.id, TERMINAL, timeout=40)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
        status = json.loads(stub.GetStatus(pb.GetStatusRequest(), metadata=MD).status_json)
        assert "throttled" not in json.dumps(status)
        waiting = [e.message for e in events(stub, later.id) if e.kind == "waiting"]
        assert not any("throttled" in m for m in waiting), waiting
        for job in jobs:
            lost = [e for e in events(stub, job.id, until=has("lost")) if e.kind == "lost"]
            assert "broker-side" in lost[0].message and "requeued" in lost[0].message


def _lost(stub: Stub, job_id: str) -> bool:
    return any(e.kind == "lost" for e in events(stub, job_id))
