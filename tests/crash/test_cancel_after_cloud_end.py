"""A cancel of a cloud job that already ended keeps its result, as it does for a local job.

Found by a held-out review of issue 11: a cloud job that ended while its report could not reach
the broker (the broker down, its bootstrap between backed-off retries) was recorded CANCELLED
when the user cancelled it, its exit code and output gone: the read before a cancel
(`ended_first`) skipped agent-run attempts. Here the path to the agent endpoint is cut, the
broker up; the cancel must read the result the bootstrap printed to the console first.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("site", list(CLOUDS))
def test_a_cancel_after_a_cloud_job_ended_keeps_its_result(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    book = tmp_path / "ledger.jsonl"
    agent_port = lasting_port()
    proxy = AgentProxy(agent_port)
    # Silent attempts are read only after 10 minutes: here only the cancel reads the console.
    broker = make_broker(
        agent_port=agent_port, agent_endpoint=f"127.0.0.1:{proxy.port}",
        heartbeat_timeout="600s", report_give_up_s=600,
    )
    broker.start()
    try:
        with Instances(moto, ecs, tmp_path / "instances") as instances:
            with grpc.insecure_channel(broker.address) as channel:
                stub = Stub(channel)
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
            until(lambda: not instances.running(), what="the instance stayed up after its result was read")
    finally:
        proxy.cut()
    assert ledger.runs(book)["c"] == ["start", "end"]
