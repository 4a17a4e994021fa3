"""An owner's job in Slurm's queue behind borrowed work gets its quota back (szb serve, real Slurm).

4 A800s, `owner` guaranteed 2. Reclaim used to act only for an owner's job waiting in the broker:
once the job was sent to Slurm's queue, nothing reclaimed for it, and it waited out the borrowed
work holding its quota (up to its max_wait, a day here). Two ways it got there:

- decided on the pass snapshot that had just placed the borrowed job (a snapshot is reused for a
  poll interval), the A800s read free with the borrowed job's claim beside them, so the decision
  was not taken for one bound for Slurm's queue, and reclaim was never asked;
- sent to Slurm's queue while beyond its quota (its own work held it), then its own work ended:
  now within its quota, it pended at Slurm behind the borrowed job for good.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import OPERATOR, BrokerProcess
from tests.job_events import events_so_far, events_until, has, reached
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_reclaim_grace_slurm import auth, broker_folder, spec, until

pytestmark = pytest.mark.slurm

SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
PROVISIONING = job_pb2.JOB_STATE_PROVISIONING


def start_broker(slurm_cluster: SlurmCluster, folder: Path, dispatch: str) -> BrokerProcess:
    folder.mkdir()
    config = broker_folder(slurm_cluster, folder)
    text = config.read_text()
    config.write_text(text.replace("dispatch: {poll_interval_s: 0.2, reconcile_interval_s: 2}", dispatch))
    assert config.read_text() != text
    proc = BrokerProcess(config)
    proc.start()
    return proc


@pytest.fixture
def slow_poll(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker that reads capacity (and polls its jobs) every 30 s: a job submitted within that
    of another is decided on the snapshot that placed the other one."""
    proc = start_broker(slurm_cluster, tmp_path / "broker",
                        "dispatch: {poll_interval_s: 30, reconcile_interval_s: 600}")
    yield proc
    proc.stop()


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(slurm_cluster, tmp_path / "broker",
                        "dispatch: {poll_interval_s: 0.2, reconcile_interval_s: 2, requeue_scan_s: 1}")
    yield proc
    proc.stop()


def test_an_owner_job_decided_beside_a_borrowed_one_just_placed_reclaims(
    slow_poll: BrokerProcess, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = f"trap 'exit 0' TERM; touch {marks}/ready; while true; do sleep 0.2; done"
    with grpc.insecure_channel(slow_poll.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        get = lambda job_id, tenant: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job  # noqa: E731
        borrowed = stub.SubmitJob(pb.SubmitJobRequest(job=spec("borrowed", script, 4, max_wait_s=10)),
                                  metadata=auth("borrower")).job.id
        jobs = [(borrowed, "borrower")]
        try:
            until(lambda: (marks / "ready").exists(), "the borrowed job runs on all four A800s")
            assert get(borrowed, "borrower").state == PROVISIONING  # no poll has seen it run yet
            ask = spec("mine", "echo owner ran", 1, max_wait_s=86400)
            mine = stub.SubmitJob(pb.SubmitJobRequest(job=ask), metadata=auth("owner")).job.id
            jobs.append((mine, "owner"))
            seen = events_until(stub, borrowed, OPERATOR, has("requeued"), timeout_s=60)
            preempted = [e for e in seen if e.kind == "preempted"]
            told = [(e.kind, e.message) for e in events_so_far(stub, mine, auth("owner"))]
            # On main: sent to Slurm's queue behind the borrowed job, which nothing preempted.
            assert preempted and preempted[0].data["for_job"] == mine, ([e.kind for e in seen], told)
            # It waited in the broker, saying so, and was never sent to Slurm's queue behind it.
            first = [k for k, _ in told if k in ("waiting", "attempt")]
            assert first[:1] == ["waiting"], told
            assert any(k == "waiting" and m.startswith("reclaiming 4 borrowed unit(s)") for k, m in told), (
                told)
            done = events_until(stub, mine, auth("owner"), reached(SUCCEEDED), timeout_s=240)
            assert get(mine, "owner").state == SUCCEEDED, [(e.kind, e.message) for e in done]
            assert [e.kind for e in done].count("attempt") == 1, [(e.kind, e.message) for e in done]
        finally:
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))


def test_an_owner_job_pending_in_slurms_queue_is_withdrawn_and_reclaims(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    borrower = f"trap 'exit 0' TERM; touch {marks}/borrowed; while true; do sleep 0.2; done"
    own = textwrap.dedent(f"""\
        touch {marks}/own
        while [ ! -e {marks}/own.go ]; do sleep 0.2; done
        """)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        get = lambda job_id, tenant: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job  # noqa: E731

        def submit(name: str, script: str, gpus: int, tenant: str, max_wait_s: int) -> str:
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec(name, script, gpus, max_wait_s=max_wait_s)),
                                    metadata=auth(tenant)).job.id
            jobs.append((job_id, tenant))
            return job_id

        jobs: list[tuple[str, str]] = []
        try:
            submit("own", own, 1, "owner", 3600)
            until(lambda: (marks / "own").exists(), "the owner's first job runs on one A800")
            borrowed = submit("borrowed", borrower, 3, "borrower", 10)
            until(lambda: (marks / "borrowed").exists(), "the borrowed job runs on the other three")
            # 2 A800s: beyond the owner's quota while its first job runs (1 of 2 left), so it is
            # sent to Slurm's queue, its max_wait admitting the borrowed job's projected run.
            mine = submit("mine", "echo owner ran", 2, "owner", 86400)
            events_until(stub, mine, auth("owner"), has("attempt", "sent to its queue"))
            # The owner's first job ends: 1 A800 is free, the job needs 2, Slurm keeps it pending
            # behind the borrowed job; now within its quota, it takes it back.
            (marks / "own.go").touch()
            seen = events_until(stub, borrowed, OPERATOR, has("requeued"), timeout_s=60)
            told = [(e.kind, e.message) for e in events_so_far(stub, mine, auth("owner"))]
            preempted = [e for e in seen if e.kind == "preempted"]
            # On main: nothing was preempted; the owner's job pended at Slurm behind the borrowed one.
            assert preempted and preempted[0].data["for_job"] == mine, ([e.kind for e in seen], told)
            withdrawn = [m for k, m in told if k == "requeued" and m.startswith("withdrawn from")]
            assert len(withdrawn) == 1 and "reclaiming 3 borrowed unit(s)" in withdrawn[0], told
            # A crash while the borrowed job stops (its time limit cut at Slurm): the units stay
            # booked to the owner's job, which is neither sent back to the queue behind the
            # borrowed job nor the cause of another preemption.
            until(lambda: any("stops at a time limit" in line for line in broker.output),
                  "Slurm was told to stop the borrowed job")
            broker.kill()
            broker.restart()
            done = events_until(stub, mine, auth("owner"), reached(SUCCEEDED), timeout_s=240)
            got = [(e.kind, e.message) for e in done]
            assert get(mine, "owner").state == SUCCEEDED, got
            # Withdrawn once, sent again once its units were free: no flapping, one preemption.
            assert [k for k, _ in got].count("attempt") == 2, got
            assert [k for k, m in got if k == "requeued"] == ["requeued"], got
            kinds = [e.kind for e in events_so_far(stub, borrowed, auth("borrower"))]
            assert kinds.count("preempted") == 1, kinds
        finally:
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))


def test_borrowed_work_pending_in_slurms_queue_does_not_take_what_reclaim_freed(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """Review: the borrower's second job, pending in Slurm's queue behind its first, started on the
    A800s reclaim freed for the owner as soon as the first stopped; the owner's job waited for it
    to end (here: for ever). Pending borrowed work on the reclaimed partition goes back to the
    broker's queue (keeping its age), where it waits until the owner's job has its units."""
    marks = tmp_path / "marks"
    marks.mkdir()
    first = f"trap 'exit 0' TERM; touch {marks}/first; while true; do sleep 0.2; done"
    second = f"trap 'exit 0' TERM; touch {marks}/second; while true; do sleep 0.2; done"
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        jobs: list[tuple[str, str]] = []

        def submit(name: str, script: str, gpus: int, tenant: str, max_wait_s: int) -> str:
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec(name, script, gpus, max_wait_s=max_wait_s)),
                                    metadata=auth(tenant)).job.id
            jobs.append((job_id, tenant))
            return job_id

        try:
            submit("first", first, 4, "borrower", 10)
            until(lambda: (marks / "first").exists(), "the borrower's first job runs on all four A800s")
            waiting = submit("second", second, 4, "borrower", 86400)
            events_until(stub, waiting, auth("borrower"), has("attempt", "sent to its queue"))
            # Polls (every 0.2 s) read it pending in Slurm's queue: work that holds no units, so
            # reclaim never takes it for a victim; Slurm starts it on the first units that free.
            time.sleep(5)
            mine = submit("mine", "echo owner ran", 2, "owner", 86400)
            done = events_until(stub, mine, auth("owner"), reached(SUCCEEDED), timeout_s=180)
            assert reached(SUCCEEDED)(done), [(e.kind, e.message) for e in done]
            told = [(e.kind, e.message) for e in events_so_far(stub, waiting, auth("borrower"))]
            assert any(k == "requeued" and m.startswith("withdrawn from") for k, m in told), told
        finally:
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
