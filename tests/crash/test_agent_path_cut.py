"""A job whose instance cannot reach the agent endpoint still ends once, with its result.

Issue 11 review, defect 1. The path from the instance to the agent endpoint breaks (a proxy in
between goes away) while the job runs; the job finishes and its bootstrap prints SZB-RESULT to
the console, then knocks in vain. Past the heartbeat timeout the broker must read that result
rather than call the attempt lost, terminate the instance and run the job again.

A later held-out review of issue 11: a cloud job that ended while its report could not reach
the broker was recorded CANCELLED when the user cancelled it, its exit code and output gone: the
read before a cancel (`ended_first`) skipped agent-run attempts. With the path cut and the broker
up, the cancel must read the result the bootstrap printed to the console first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from tests.crash import ledger
from tests.crash.client import MD, TERMINAL, Stub, events, get, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.crash.proxy import AgentProxy
from tests.crash.test_results_survive import CLOUDS, until
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront
from tests.ports import lasting_port


@contextmanager
def cut_off_broker(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, folder: Path, heartbeat_timeout: str
) -> Iterator[tuple[Stub, AgentProxy]]:
    """A broker whose instances reach its agent endpoint through a proxy the test can cut."""
    agent_port = lasting_port()
    proxy = AgentProxy(agent_port)
    broker = make_broker(
        agent_port=agent_port, agent_endpoint=f"127.0.0.1:{proxy.port}",
        heartbeat_timeout=heartbeat_timeout, report_give_up_s=600,
    )
    broker.start()
    try:
        with Instances(moto, ecs, folder / "instances") as instances:
            with grpc.insecure_channel(broker.address) as channel:
                yield Stub(channel), proxy
            until(lambda: not instances.running(), what="the instance stayed up after its result was read")
    finally:
        proxy.cut()


@pytest.mark.parametrize("site", list(CLOUDS))
def test_a_finished_job_cut_off_from_the_agent_endpoint_is_read_from_the_console(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Heartbeats stop with the path cut; the console's result ends the job, never a re-run."""
    book = tmp_path / "ledger.jsonl"
    with cut_off_broker(make_broker, moto, ecs, tmp_path, heartbeat_timeout="6s") as (stub, proxy):
        job = submit(stub, job_spec("cut-off", CLOUDS[site], ledger.command(book, "j", 3.0)))
        until(lambda: ledger.runs(book).get("j") == ["start"], timeout=60, what="never started")
        wait_state(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
        proxy.cut()  # the broker stays up; its instance can no longer reach it
        until(lambda: ledger.runs(book).get("j") == ["start", "end"], what="the job never ended")
        final = wait_state(stub, job.id, TERMINAL, timeout=60)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 1, final.message
        assert final.exit_code == 0 and "j finished with 0" in final.log_tail
        kinds = [e.kind for e in events(stub, job.id)]
        assert "lost" not in kinds, kinds
    assert ledger.runs(book)["j"] == ["start", "end"]


@pytest.mark.parametrize("site", list(CLOUDS))
def test_a_cancel_after_a_cloud_job_ended_keeps_its_result(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    book = tmp_path / "ledger.jsonl"
    # Silent attempts are read only after 10 minutes: here only the cancel reads the console.
    with cut_off_broker(make_broker, moto, ecs, tmp_path, heartbeat_timeout="600s") as (stub, proxy):
        job = submit(stub, job_spec("cancel-after-end", CLOUDS[site], ledger.command(book, "c", 1.0)))
        wait_state(stub, job.id, {job_pb2.JOB_STATE_RUNNING}, timeout=60)
        proxy.cut()
        consoles = lambda: [*moto.console.values(), *ecs.console.values()]  # noqa: E731
        until(lambda: any("SZB-RESULT" in c for c in consoles()), timeout=60, what="never ended")
        assert get(stub, job.id).state == job_pb2.JOB_STATE_RUNNING  # its report never came
        stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=MD, timeout=30)
        final = wait_state(stub, job.id, TERMINAL, timeout=30)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.exit_code == 0, final.message
        assert "c finished with 0" in final.log_tail and final.attempts == 1
        assert "cancelled" not in [e.kind for e in events(stub, job.id)]
