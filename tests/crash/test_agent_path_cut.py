"""A job whose instance cannot reach the agent endpoint while the broker is up still ends once.

Issue 11 review, defect 1. The path from the instance to the agent endpoint breaks (a proxy in
between goes away) while the job runs; the job finishes and its bootstrap prints SZB-RESULT to
the console, then knocks in vain. Past the heartbeat timeout the broker must read that result
rather than call the attempt lost, terminate the instance and run the job again.
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
from tests.crash.proxy import AgentProxy
from tests.crash.test_results_survive import CLOUDS, until
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront
from tests.ports import lasting_port


@pytest.mark.parametrize("site", list(CLOUDS))
def test_a_finished_job_cut_off_from_the_agent_endpoint_is_read_from_the_console(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Heartbeats stop with the path cut; the console's result ends the job, never a re-run."""
    book = tmp_path / "ledger.jsonl"
    agent_port = lasting_port()
    proxy = AgentProxy(agent_port)
    broker = make_broker(
        agent_port=agent_port, agent_endpoint=f"127.0.0.1:{proxy.port}",
        heartbeat_timeout="6s", report_give_up_s=600,
    )
    broker.start()
    try:
        with Instances(moto, ecs, tmp_path / "instances") as instances:
            with grpc.insecure_channel(broker.address) as channel:
                stub = Stub(channel)
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
            until(lambda: not instances.running(), what="the instance stayed up after its result was read")
    finally:
        proxy.cut()
    assert ledger.runs(book)["j"] == ["start", "end"]
