"""Units reclaimed for an owner's job are let go once it is cancelled (szb serve).

They stayed booked to it until 10 s after the victim was seen stopped, whatever became of the
job: borrowed work waited on them after the owner's job was cancelled, told "being reclaimed for
another job". On a loaded Slurm the 10 s were also too short: its capacity still read them busy,
and reclaim preempted a second borrowed job for the same need. They are now kept until the job
runs on them, or leaves the queue.
"""

from __future__ import annotations

import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import BrokerProcess, running_broker, write_broker_folder
from tests.fairshare.test_reclaim_two_owners_e2e import job, until
from tests.job_events import events_so_far
from tests.local_policy import a800, local_policy

TOKENS = {"alpha": "token-alpha-0123456789ab", "borrower": "token-borrower-012345"}

POLICY = local_policy(
    "  - {id: alpha, kind: institute, entity_country: CN, share: {weight: 1, quota: {local/a800: 4}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN, share: {weight: 3}}\n",
    a800(4),
    rest="fair_share:\n  half_life: 0s\n  reclaim: {grace: 3s, max_capacity_share: 1, window: 10m}\n",
)

KEPT_OFF = "being reclaimed for another job"


@pytest.fixture()
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("reclaim-released")
    with running_broker(write_broker_folder(folder, POLICY, TOKENS)) as proc:
        yield proc


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def stubborn(marks: Path, name: str) -> str:
    """Borrowed work that ignores SIGTERM: it stops when the grace is over (SIGKILL)."""
    return textwrap.dedent(f"""\
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(os.path.join({str(marks)!r}, "ready-{name}-" + str(os.getpid())), "w").close()
        time.sleep(300)
        """)


def kept_off(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, tenant: str) -> list[str]:
    return [e.message for e in events_so_far(stub, job_id, auth(tenant)) if KEPT_OFF in e.message]


def fill_with_borrowed(stub: broker_service_pb2_grpc.BrokerServiceStub, marks: Path) -> list[str]:
    borrowed = [
        stub.SubmitJob(pb.SubmitJobRequest(job=job(f"b{i}", 2, stubborn(marks, f"b{i}"))),
                       metadata=auth("borrower")).job.id
        for i in range(2)
    ]
    until(lambda: len(list(marks.glob("ready-b*"))) == 2, "the borrower fills the partition")
    return borrowed


def marks_folder() -> Path:
    marks = Path(tempfile.mkdtemp(prefix="szb-marks-"))
    marks.chmod(0o1777)
    return marks


def test_units_reclaimed_for_a_cancelled_job_are_not_kept_off_other_work(broker: BrokerProcess) -> None:
    marks = marks_folder()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        borrowed = fill_with_borrowed(stub, marks)
        try:
            owner = stub.SubmitJob(pb.SubmitJobRequest(job=job("owner", 2, "import time; time.sleep(120)")),
                                   metadata=auth("alpha")).job.id
            preempted: list[str] = []

            def one_preempted() -> bool:
                preempted[:] = [j for j in borrowed if any(
                    e.kind == "preempted" for e in events_so_far(stub, j, auth("borrower")))]
                return bool(preempted)

            until(one_preempted, "reclaim preempts a borrowed job for the owner's")
            stub.CancelJob(pb.CancelJobRequest(id=owner), metadata=auth("alpha"))  # within the victim's grace
            [victim] = preempted
            # Requeued, the victim runs again on the units once it stopped: nobody else wants them.
            until(lambda: len(list(marks.glob(f"ready-b{borrowed.index(victim)}-*"))) == 2,
                  "the preempted borrowed job runs again")
            assert kept_off(stub, victim, "borrower") == []
        finally:
            for j in borrowed:
                stub.CancelJob(pb.CancelJobRequest(id=j), metadata=auth("borrower"))
