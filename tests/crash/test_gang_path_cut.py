"""A gang whose nodes cannot reach the agent endpoint while the broker is up still ends once.

Issue 11's known gap for gangs. The path from the instances to the agent endpoint breaks while
a 2-node gang runs; each node's job ends and its bootstrap prints that rank's SZB-RESULT to its
own console, then knocks in vain. Past the heartbeat timeout the broker must read every rank's
console rather than call the gang lost, terminate its nodes and run it again.
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

GANG_CLOUDS = ["aws-east", "aliyun-bj"]  # the adapters that launch gangs


def _cut_gang(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path, failing_rank: int
) -> tuple[job_pb2.Job, list[str], dict[str, list[str]], list[str]]:
    """Run a 2-node gang, cut its path once both ranks run: the final job, its event kinds, the
    ledger's runs and the attempt of each instance launched for it."""
    book = tmp_path / "ledger.jsonl"
    agent_port = lasting_port()
    proxy = AgentProxy(agent_port)
    broker = make_broker(
        agent_port=agent_port,
        agent_endpoint=f"127.0.0.1:{proxy.port}",
        heartbeat_timeout="6s",
        report_give_up_s=600,
    )
    broker.start()
    command = ledger.gang_command(book, "g", 3.0, failing_rank=failing_rank, exit_code=7)
    try:
        with Instances(moto, ecs, tmp_path / "instances") as instances:
            with grpc.insecure_channel(broker.address) as channel:
                stub = Stub(channel)
                spec = job_spec("gang-cut-off", CLOUDS[site], command)
                spec.resources.nodes = 2
                job = submit(stub, spec)
                both = {"g-r0": ["start"], "g-r1": ["start"]}
                until(lambda: dict(ledger.runs(book)) == both, timeout=90, what="the gang never ran")
                wait_state(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
                proxy.cut()  # the broker stays up; neither node can reach it any more
                ended = {"g-r0": ["start", "end"], "g-r1": ["start", "end"]}
                until(lambda: dict(ledger.runs(book)) == ended, what="the gang's ranks never ended")
                final = wait_state(stub, job.id, TERMINAL, timeout=60)
                kinds = [e.kind for e in events(stub, job.id)]
            until(lambda: not instances.running(), what="a node stayed up after the gang's results were read")
            launched = sorted(b.attempt for b in instances.booted.values() if b.attempt.startswith(job.id))
    finally:
        proxy.cut()
    return final, kinds, dict(ledger.runs(book)), launched


@pytest.mark.parametrize("site", GANG_CLOUDS)
def test_a_finished_gang_cut_off_from_the_agent_endpoint_is_read_from_its_consoles(
    site: str, make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Heartbeats stop with the path cut; every rank's console result ends the gang, never a re-run."""
    final, kinds, runs, launched = _cut_gang(site, make_broker, moto, ecs, tmp_path, failing_rank=-1)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.attempts == 1, final.message
    assert final.exit_code == 0 and "g-r0 finished with 0" in final.log_tail, final.log_tail
    assert "lost" not in kinds and kinds.count("rank_exit") == 2, kinds
    assert runs == {"g-r0": ["start", "end"], "g-r1": ["start", "end"]}
    assert launched == [f"{final.id}-a1"] * 2, launched  # one gang of two nodes, never launched again


def test_a_rank_that_failed_behind_a_cut_path_fails_the_gang(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path: Path
) -> None:
    """Rank 1 exits 7 with the path cut: its console's result fails the gang, naming rank 1."""
    final, kinds, runs, launched = _cut_gang("aws-east", make_broker, moto, ecs, tmp_path, failing_rank=1)
    assert final.state == job_pb2.JOB_STATE_FAILED and final.attempts == 1, final.message
    assert final.exit_code == 7 and "rank 1 of 2" in final.message, final.message
    assert "lost" not in kinds, kinds
    assert runs == {"g-r0": ["start", "end"], "g-r1": ["start", "end"]}
    assert launched == [f"{final.id}-a1"] * 2, launched  # one gang of two nodes, never launched again
