"""Preemptions are no failed attempts: a job reclaimed, then lost once, is requeued, not failed.

Found by a held-out review of issue 14: each reclaim used up one of the job's `max_attempts`
(and the youngest borrowed job, just requeued, is the one reclaimed next), so a job reclaimed
five times failed for good at its first real loss.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import running_broker, write_broker_folder
from tests.fairshare.local_site import Metadata, a800_job, bearer, policy, until
from tests.processes import runners_under

TOKENS = {"owner": "token-owner-0123456789", "borrower": "token-borrower-012345"}
POLICY = policy(
    "  - {id: owner, kind: institute, entity_country: CN, share: {quota: {local/a800: 1}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN}",
    per_node=1,
    rest="fair_share:\n  reclaim: {grace: 1s, max_capacity_share: 1.0, window: 1h}\n"
    "burst:\n  retries: {max_attempts: 2}",
)


def auth(tenant: str) -> Metadata:
    return bearer(TOKENS, tenant)


def test_a_reclaimed_job_lost_once_is_requeued_not_failed(tmp_path: Path) -> None:
    with running_broker(write_broker_folder(tmp_path, POLICY, TOKENS)) as proc, \
            grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def state(job_id: str, tenant: str) -> int:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job.state

        sleeper = a800_job("borrowed", "import time; time.sleep(900)")
        borrowed = stub.SubmitJob(pb.SubmitJobRequest(job=sleeper), metadata=auth("borrower")).job.id
        until("the borrowed job runs", lambda: state(borrowed, "borrower") == job_pb2.JOB_STATE_RUNNING)
        own_spec = a800_job("own", "print('mine')")
        own = stub.SubmitJob(pb.SubmitJobRequest(job=own_spec), metadata=auth("owner")).job.id
        until("the owner's job ran", lambda: state(own, "owner") == job_pb2.JOB_STATE_SUCCEEDED)
        until("the borrowed job runs again", lambda: state(borrowed, "borrower") == job_pb2.JOB_STATE_RUNNING)
        runners = list(runners_under(tmp_path))
        assert runners, "no runner process found for the borrowed job"
        for pid in runners:  # a real loss: the runner dies without recording an exit code
            os.kill(pid, signal.SIGKILL)

        def get() -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=borrowed), metadata=auth("borrower")).job

        until("the loss is seen", lambda: get().state != job_pb2.JOB_STATE_RUNNING or "lost" in get().message)
        job = get()
        assert job.state != job_pb2.JOB_STATE_FAILED, job.message
        until("the borrowed job runs a third time", lambda: get().state == job_pb2.JOB_STATE_RUNNING)
        stub.CancelJob(pb.CancelJobRequest(id=borrowed), metadata=auth("borrower"))
        until("its process is gone", lambda: not runners_under(tmp_path))
