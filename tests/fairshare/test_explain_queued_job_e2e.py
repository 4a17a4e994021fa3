"""`szb explain JOB_ID --server` explains a queued job where it stands. Review: an operator
asking why a job waits could only explain a copy of its spec, which the broker placed behind
the job itself: the job said `2nd in tenant order (within its quota)`, the explain `3rd ...
(borrowed)`. A real `szb serve`, the local executor, real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb, write_broker_folder
from tests.fairshare.test_fair_e2e import POLICY, SLOTS, TOKENS, auth, gpu_job


def test_a_queued_job_is_explained_where_it_stands(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_folder(tmp_path, POLICY, TOKENS))
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

            def submit(tenant: str, name: str, seconds: float = 120) -> str:
                request = pb.SubmitJobRequest(job=gpu_job(name, seconds))
                return stub.SubmitJob(request, metadata=auth(tenant)).job.id

            running = [submit("flood", f"run{i}") for i in range(SLOTS)]
            deadline = time.monotonic() + 60
            get = pb.GetJobRequest(id=running[-1])
            while stub.GetJob(get, metadata=auth("flood")).job.state != job_pb2.JOB_STATE_RUNNING:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            queued = [submit("flood", "q1"), submit("flood", "q2"), submit("small", "s1")]
            deadline = time.monotonic() + 30
            while "tenant order" not in (job := stub.GetJob(pb.GetJobRequest(id=queued[1]),
                                                            metadata=auth("flood")).job).message:
                assert time.monotonic() < deadline, job.message
                time.sleep(0.2)
            time.sleep(1.5)  # (its standing now shows at once: let it have waited, which explain must say)
            asked = szb(broker, TOKENS["flood"], "explain", queued[1], "-o", "json")
            job = stub.GetJob(pb.GetJobRequest(id=queued[1]), metadata=auth("flood")).job
            running_one = szb(broker, TOKENS["flood"], "explain", running[0])
            theirs = szb(broker, TOKENS["small"], "explain", queued[1])
            with_tenant = szb(broker, TOKENS["flood"], "explain", queued[1], "--tenant", "small")
            for job_id in running + queued:
                tenant = "small" if job_id == queued[2] else "flood"
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
    finally:
        broker.stop()
    assert asked.returncode == 0, asked.stderr
    decision = json.loads(asked.stdout)["decision"]
    standing = next(r for r in decision["reasons"] if "tenant order" in r)
    assert standing in job.message, (standing, job.message)  # the job's own place, not behind it
    assert decision["action"] == "wait" and decision["waited_s"] > 0, decision
    assert running_one.returncode == 1 and "explain answers for a queued job" in running_one.stderr, (
        running_one.stderr
    )
    assert theirs.returncode == 1 and "NOT_FOUND" in theirs.stderr, theirs.stderr  # another tenant's
    assert with_tenant.returncode == 2, with_tenant.stderr
