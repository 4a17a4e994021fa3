"""Two tenants take their quotas back at once (issue 14 review), through `szb serve` over gRPC.

A borrower fills a 4-A800 partition on which `alpha` and `beta` are each guaranteed 2. Both
submit a 2-GPU job together: each job's reclaim must preempt borrowed work of its own. The
units one reclaim has set stopping are that job's, not free capacity for the other owner's job
(which then preempted nothing, and reclaimed only after the first owner's units had been
taken and their grace had run out).
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, OPERATOR, BrokerProcess, running_broker, write_broker_folder
from tests.local_policy import a800, local_policy

TOKENS = {
    "alpha": "token-alpha-0123456789ab",
    "beta": "token-beta-0123456789abc",
    "borrower": "token-borrower-012345",
}

POLICY = local_policy(
    "  - {id: alpha, kind: institute, entity_country: CN, share: {weight: 1, quota: {local/a800: 2}}}\n"
    "  - {id: beta, kind: university, entity_country: CN, share: {weight: 0.5, quota: {local/a800: 2}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN, share: {weight: 3}}\n",
    a800(4),
    rest="fair_share:\n  half_life: 0s\n  reclaim: {grace: 8s, max_capacity_share: 1, window: 10m}\n",
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("two-owners")
    with running_broker(write_broker_folder(folder, POLICY, TOKENS, operator=True)) as proc:
        yield proc


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def job(name: str, count: int, code: str) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(
        name=name, command=[JOB_PYTHON, "-c", code], runtime_estimate=duration_pb2.Duration(seconds=600)
    )
    msg.resources.accelerators.count = count
    msg.resources.accelerators.any_of.append("A800")
    return msg


def state(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, tenant: str) -> int:
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job.state


def preempted_for(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> str | None:
    """The owner job a borrowed job was preempted for, if it was (an operator reads it: the
    borrower is not told another tenant's job)."""
    try:
        for resp in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=OPERATOR, timeout=2):
            if resp.event.kind == "preempted":
                return str(resp.event.data["for_job"])
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return None


def until(check: object, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_two_owners_reclaiming_at_once_each_preempt_their_own(broker: BrokerProcess) -> None:
    marks = Path(tempfile.mkdtemp(prefix="szb-marks-"))
    marks.chmod(0o1777)
    # Borrowed work that ignores SIGTERM: it stops only when the grace is over (SIGKILL).
    code = textwrap.dedent(f"""\
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(os.path.join({str(marks)!r}, "ready-" + str(os.getpid())), "w").close()
        time.sleep(300)
        """)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        borrowed = [
            stub.SubmitJob(pb.SubmitJobRequest(job=job(f"b{i}", 1, code)), metadata=auth("borrower")).job.id
            for i in range(4)
        ]
        try:
            until(lambda: len(list(marks.glob("ready-*"))) == 4, "the borrower fills the partition")
            owners = {
                tenant: stub.SubmitJob(
                    pb.SubmitJobRequest(job=job(tenant, 2, "print('mine')")), metadata=auth(tenant)
                ).job.id
                for tenant in ("alpha", "beta")
            }
            # Both reclaims are decided while the first victims are still in their grace.
            until(
                lambda: any(
                    state(stub, j, t) != job_pb2.JOB_STATE_QUEUED for t, j in owners.items()
                ),
                "an owner's job starts",
            )
            reclaimed = [preempted_for(stub, j) for j in borrowed]
            assert sorted(filter(None, reclaimed)) == sorted([*owners.values()] * 2), reclaimed
            for tenant, job_id in owners.items():
                until(lambda: state(stub, job_id, tenant) == job_pb2.JOB_STATE_SUCCEEDED, f"{tenant} ran")  # noqa: B023
        finally:  # the borrowed jobs ignore SIGTERM and outlive the broker
            for j in borrowed:
                stub.CancelJob(pb.CancelJobRequest(id=j), metadata=auth("borrower"))
