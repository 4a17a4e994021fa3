"""Units reclaimed for an owner's job stay booked to it across a broker crash (szb serve, real Slurm).

4 A800s, `owner` guaranteed 2; `borrower` fills them with two 2-GPU jobs that ignore SIGTERM,
so the one preempted for the owner's 2-GPU job holds its GPUs until Slurm kills it at its cut
time limit (the grace, rounded up to whole minutes, then KillWait). The broker is killed while it
stops and started again on the same data dir. It must remember that those units are the owner's:
not preempt the other borrowed job for the same need, and start the owner's job on them. Live
explain says so for another job that would be sent to Slurm's queue meanwhile, before the crash
and after it: the dispatcher holds such a job in the broker (`Reclaimer.keep_off`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.serde_explain import decision_from_proto
from tests.brokerproc import BrokerProcess
from tests.job_events import events_until
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_reclaim_grace_slurm import auth, broker_folder, spec, until

pytestmark = pytest.mark.slurm

RUNNING = job_pb2.JOB_STATE_RUNNING
BOOKED = "are being reclaimed for another job; it waits until that job has them"


def explained(stub: broker_service_pb2_grpc.BrokerServiceStub) -> dict[str, object]:
    """Live explain of another borrowed 2-GPU job, patient enough for Slurm's queue."""
    ask = spec("another", "true", 2)
    answer = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=ask), metadata=auth("borrower"))
    return dict(decision_from_proto(answer.explanation.decision))


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    folder = tmp_path / "broker"
    folder.mkdir()
    proc = BrokerProcess(broker_folder(slurm_cluster, folder))
    proc.start()
    yield proc
    proc.stop()


def test_a_crash_while_preempted_work_stops_preempts_nothing_more(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        get = lambda job_id, tenant: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job  # noqa: E731
        borrowed = []
        for i in range(2):
            script = f"trap '' TERM; touch {marks}/ready-{i}; while true; do sleep 0.2; done"
            got = stub.SubmitJob(pb.SubmitJobRequest(job=spec(f"borrowed-{i}", script, 2)),
                                 metadata=auth("borrower"))
            borrowed.append(got.job.id)
        until(lambda: len(list(marks.glob("ready-*"))) == 2, "both borrowed jobs run on two A800s each")
        until(lambda: all(get(j, "borrower").state == RUNNING for j in borrowed), "the broker saw both run")
        mine = stub.SubmitJob(pb.SubmitJobRequest(job=spec("mine", "echo owner ran", 2, max_wait_s=60)),
                              metadata=auth("owner")).job.id
        try:
            until(lambda: any(get(j, "borrower").state != RUNNING for j in borrowed),
                  f"nothing was preempted for the owner: {get(mine, 'owner').message}")
            victim = next(j for j in borrowed if get(j, "borrower").state != RUNNING)
            other = next(j for j in borrowed if j != victim)
            said = explained(stub)
            assert said["action"] == "wait" and BOOKED in str(said["reasons"]), said
            broker.kill()  # while the victim still runs out its grace on Slurm
            broker.restart()
            channel.close()
            with grpc.insecure_channel(broker.address) as again:
                stub = broker_service_pb2_grpc.BrokerServiceStub(again)
                # Once the restarted scheduler has read its state back (its first pass), and until
                # the owner's job runs on the booked units. Slurm may stop the victim while the
                # broker is down (its cut limit can come 20 s after the preemption): the restarted
                # broker then sends the owner's job to Slurm at once, and the units stay booked to
                # it while it pends there (a CI run saw explain send another job onto them, the
                # victim's stop unwatched after the restart).
                said, until_s = explained(stub), time.monotonic() + 10
                while not (said["action"] == "wait" and BOOKED in str(said["reasons"])):
                    if get(mine, "owner").state in (RUNNING, job_pb2.JOB_STATE_SUCCEEDED):
                        break  # the units are its own now: nothing is booked
                    assert time.monotonic() < until_s, f"the restart forgot the booking: {said}"
                    time.sleep(0.5)
                    said = explained(stub)
                deadline = time.monotonic() + 240
                while (job := get(mine, "owner")).state != job_pb2.JOB_STATE_SUCCEEDED:
                    kinds = [e.kind for e in events_until(stub, other, auth("borrower"), lambda _: False, 1)]
                    assert "preempted" not in kinds, (
                        "after the restart a second borrowed job was preempted for the same need: "
                        f"{kinds}; owner: {job.message}"
                    )
                    assert time.monotonic() < deadline, f"the owner's job never ran: {job.message}"
                    time.sleep(1)
                assert get(other, "borrower").state == RUNNING
        finally:
            with grpc.insecure_channel(broker.address) as last:
                stub = broker_service_pb2_grpc.BrokerServiceStub(last)
                for job_id, tenant in [*((b, "borrower") for b in borrowed), (mine, "owner")]:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
