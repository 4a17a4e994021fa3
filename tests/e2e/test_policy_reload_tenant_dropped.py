"""A reload whose policy no longer declares a tenant keeps that tenant's queued jobs.

team-a's job waits behind team-b's job holding the whole a800 partition. A policy without
team-a was loaded: every offer then refused the job as `policy.tenant`, and the dispatcher
failed it for good ("rejected"), so an operator's slip in the tenants list (or a tenant being
re-declared a minute later) lost stored work. The job now waits, saying why, and runs once a
policy declares its tenant again; new submissions of the undeclared tenant stay refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.e2e.test_policy_reload import policy_hash, wait_hash
from tests.ha.cloud import wait_until

TEAM_A = "  - {id: team-a, kind: university, entity_country: CN}\n"
SLEEP = [PY, "-c", "import time; time.sleep(600)"]


@dataclass
class Held:
    """team-a's 4-A800 job waiting behind team-b's job holding the whole partition."""

    stub: broker_service_pb2_grpc.BrokerServiceStub
    busy: str
    waiter: str

    def job(self) -> job_pb2.Job:
        got: job_pb2.Job = self.stub.GetJob(pb.GetJobRequest(id=self.waiter), metadata=auth("team-a")).job
        return got

    def reload(self, folder: Path, text: str) -> None:
        old = policy_hash(self.stub)
        (folder / "policy.yaml").write_text(text)
        wait_hash(self.stub, old)

    def restored_and_run(self, folder: Path) -> None:
        """The policy of the start again, the holder gone: the waiting job runs."""
        self.reload(folder, POLICY)
        self.stub.CancelJob(pb.CancelJobRequest(id=self.busy), metadata=auth("team-b"))
        done = wait_for(self.stub, self.waiter, TERMINAL, timeout=60)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done


@contextmanager
def held_waiter(tmp_path: Path) -> Iterator[Held]:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    jobs: list[tuple[str, str]] = []
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            busy = submit(stub, spec("busy", SLEEP, gpus=4), tenant="team-b").job.id
            jobs.append((busy, "team-b"))
            wait_for(stub, busy, {job_pb2.JOB_STATE_RUNNING}, tenant="team-b")
            waiter = submit(stub, spec("waiter", [PY, "-c", "print('ran')"], gpus=4)).job.id
            jobs.append((waiter, "team-a"))
            held = Held(stub, busy, waiter)
            wait_until("team-a's job waits", lambda: held.job().pending_reason)
            yield held
    finally:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
            for job_id, tenant in jobs:
                wait_for(stub, job_id, TERMINAL, tenant=tenant, timeout=60)
        broker.stop()


def test_queued_jobs_of_a_dropped_tenant_wait_and_run_when_it_returns(tmp_path: Path) -> None:
    assert TEAM_A in POLICY
    with held_waiter(tmp_path) as held:
        stub, job = held.stub, held.job
        held.reload(tmp_path, POLICY.replace(TEAM_A, ""))
        wait_until(
            "the job says its tenant is not declared",
            lambda: "not declared" in job().pending_reason,
            timeout=20,
            shown=lambda: f"{job().state} {job().pending_reason}",
        )
        assert job().state == job_pb2.JOB_STATE_QUEUED
        assert "team-a" in job().pending_reason
        # Its jobs are still listed, and a filter none of them matches is an empty page (a
        # review: NOT_FOUND "is not in the policy and has no jobs", where it has one).
        running = pb.ListJobsRequest(tenant="team-a", states=[job_pb2.JOB_STATE_RUNNING])
        assert not stub.ListJobs(running, metadata=auth("team-a")).jobs
        listed = stub.ListJobs(pb.ListJobsRequest(tenant="team-a"), metadata=auth("team-a")).jobs
        assert [j.id for j in listed] == [held.waiter]

        with pytest.raises(grpc.RpcError) as refused:  # new work of the tenant stays refused
            submit(stub, spec("new", [PY, "-c", "pass"], gpus=1))
        assert "team-a" in (refused.value.details() or "")
        held.restored_and_run(tmp_path)


A800 = "      - {name: a800, accelerator: A800, count_per_node: 4, price_hour: 14.0}\n"


def test_queued_jobs_a_reload_leaves_no_offer_wait_and_run_when_one_returns(tmp_path: Path) -> None:
    """Held-out review (issue 12): a reload without the a800 partition (a typo in a routine edit)
    was accepted and failed every queued A800 job at once (`hardware.fit`), for good: 22 jobs on the
    reviewer's broker. They now wait, saying why, and run once a policy has the partition again."""
    assert A800 in POLICY
    with held_waiter(tmp_path) as held:
        job = held.job
        held.reload(tmp_path, POLICY.replace(A800, ""))
        wait_until(
            "the job says no offer allows it any more",
            lambda: "no offer of the policy in force" in job().pending_reason,
            timeout=20,
            shown=lambda: f"{job().state} {job().pending_reason} {job().message}",
        )
        assert job().state == job_pb2.JOB_STATE_QUEUED
        with pytest.raises(grpc.RpcError) as refused:  # new work needing it is refused at the door
            submit(held.stub, spec("new", [PY, "-c", "pass"], gpus=4))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        held.restored_and_run(tmp_path)
