"""An owner's job pending in Slurm's queue whose reclaim the waste budget holds back says so.

4 A800s, `owner` guaranteed 2. The owner's 2-A800 job was sent to Slurm's queue while its own
1-A800 job held half its quota; that job ends, and the owner is owed the units borrowed work
holds. The reclaim budget is in debt (a preemption before the restart, as the store kept it), so
the requeue scan preempts nothing yet. The job said nothing of it: its message still read as if
it waited its turn. Now it says the reclaim is held back by the budget, and until about when.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.store import ReclaimState, SqliteStore
from tests.brokerproc import BrokerProcess
from tests.job_events import events_so_far, events_until, has
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_reclaim_grace_slurm import SITE, auth, spec, until
from tests.slurm.test_reclaim_queued_slurm import start_broker

pytestmark = pytest.mark.slurm

DEBT = -3600.0
"""Accelerator-seconds the bucket owes (it refills at 2 a second: about 30 min to repay)."""


def test_a_job_pending_at_slurm_says_its_reclaim_waits_for_the_budget(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = tmp_path / "broker"
    broker: BrokerProcess | None = None
    jobs: list[tuple[str, str]] = []
    try:
        broker = start_broker(slurm_cluster, folder,
                              "dispatch: {poll_interval_s: 0.2, reconcile_interval_s: 2, requeue_scan_s: 1}")
        broker.stop()  # its store exists now: a bucket in debt, as a broker that preempted kept it
        store = SqliteStore(folder / "data" / "broker.db")
        try:
            store.save_reclaim_state(ReclaimState({f"{SITE}/a800": (DEBT, time.time())}))
        finally:
            store.close()
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

            def submit(name: str, script: str, gpus: int, tenant: str, max_wait_s: int) -> str:
                ask = spec(name, script, gpus, max_wait_s=max_wait_s)
                job_id = stub.SubmitJob(pb.SubmitJobRequest(job=ask), metadata=auth(tenant)).job.id
                jobs.append((job_id, tenant))
                return str(job_id)

            own = f"touch {marks}/own; while [ ! -e {marks}/own.go ]; do sleep 0.2; done"
            submit("own", own, 1, "owner", 3600)
            until(lambda: (marks / "own").exists(), "the owner's first job runs on one A800")
            borrower = f"touch {marks}/borrowed; while true; do sleep 0.2; done"
            borrowed = submit("borrowed", borrower, 3, "borrower", 10)
            until(lambda: (marks / "borrowed").exists(), "the borrowed job runs on the other three")
            mine = submit("mine", "echo owner ran", 2, "owner", 86400)
            events_until(stub, mine, auth("owner"), has("attempt", "sent to its queue"))
            (marks / "own.go").touch()  # now within its quota, behind the borrowed job
            said = events_until(stub, mine, auth("owner"), has("waiting", "reclaim budget"), timeout_s=60)
            told = [(e.kind, e.message) for e in said]
            # On main: nothing said after "sent to its queue"; the job pended there in silence.
            notes = [m for k, m in told if k == "waiting" and "reclaim budget" in m]
            assert notes, told
            prefix = f"pending in {SITE}'s queue until its quota is reclaimed, about "
            assert notes[0].startswith(prefix), notes
            # Whose work is not said: another tenant's name is not the owner's to learn.
            assert "lent to borrowed work of other tenants" in notes[0] and "borrower" not in notes[0], notes
            got = stub.GetJob(pb.GetJobRequest(id=mine), metadata=auth("owner")).job
            assert got.state == job_pb2.JOB_STATE_PROVISIONING and got.message == notes[-1], got.message
            # Held back: nothing preempted, and it is said once, not at every scan.
            time.sleep(3)
            kinds = [e.kind for e in events_so_far(stub, borrowed, auth("borrower"))]
            assert "preempted" not in kinds, kinds
            again = [m for k, m in [(e.kind, e.message) for e in events_so_far(stub, mine, auth("owner"))]
                     if k == "waiting" and "reclaim budget" in m]
            assert len(again) == 1, again
    finally:
        if broker is not None:
            with grpc.insecure_channel(broker.address) as channel:
                stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
                for job_id, tenant in jobs:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
            broker.stop()
