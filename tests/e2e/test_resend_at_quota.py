"""A resend of stored jobs (same client_id) gets them back, whatever the tenant's quota (szb serve).

Held-out review: at its `max_queued_jobs`, a tenant resending a submission whose answer it lost
(the README's remedy for STORE_UNAVAILABLE) was refused RESOURCE_EXHAUSTED, though the job had
been stored, and each resend below the limit spent a submit-rate token. A resend is not a new
job: quota, rate and policy checks are for what is not stored yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import running_broker, write_broker_folder
from tests.e2e.conftest import TOKENS, auth
from tests.e2e.test_quotas import job, quota_failure, unfinished
from tests.local_policy import cpu, local_policy

POLICY = local_policy(
    "  - {id: team-a, kind: university, entity_country: CN}\n"
    "  - {id: team-b, kind: institute, entity_country: CN}\n",
    cpu(64),
    rest="limits: {max_queued_jobs: 2, submit_rate: 0.001, submit_burst: 3}\n",
)


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    folder = tmp_path_factory.mktemp("resend")
    with running_broker(write_broker_folder(folder, POLICY, TOKENS)) as proc, grpc.insecure_channel(
        proc.address
    ) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def submit(stub: broker_service_pb2_grpc.BrokerServiceStub, client_id: str) -> pb.SubmitJobResponse:
    request = pb.SubmitJobRequest(job=job(client_id, argv=2), client_id=client_id)
    response: pb.SubmitJobResponse = stub.SubmitJob(request, metadata=auth("team-a"))
    return response


def test_a_resend_at_the_queue_limit_returns_the_stored_job_and_spends_no_rate(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    first, second = submit(stub, "cid-1"), submit(stub, "cid-2")  # the queue is full now
    assert first.created and second.created
    try:
        for _ in range(3):  # more resends than the rate's burst has left
            again = submit(stub, "cid-1")
            assert not again.created and again.job.id == first.job.id
        batch = pb.SubmitJobsRequest(requests=[
            pb.SubmitJobRequest(job=job(c, argv=2), client_id=c) for c in ("cid-2", "cid-1")])
        answers = stub.SubmitJobs(batch, metadata=auth("team-a")).responses
        assert [(a.job.id, a.created) for a in answers] == [(second.job.id, False), (first.job.id, False)]
        # A new job is still counted: the queue is full.
        with pytest.raises(grpc.RpcError) as err:
            submit(stub, "cid-3")
        assert quota_failure(err.value).quota_id == "max_queued_jobs"
        # With room again, the one rate token the two new jobs left takes one more.
        stub.CancelJob(pb.CancelJobRequest(id=first.job.id), metadata=auth("team-a"))
        stub.CancelJob(pb.CancelJobRequest(id=second.job.id), metadata=auth("team-a"))
        deadline = time.monotonic() + 20
        while unfinished(stub, "team-a") and time.monotonic() < deadline:
            time.sleep(0.1)
        third = submit(stub, "cid-3")
        assert third.created
        stub.CancelJob(pb.CancelJobRequest(id=third.job.id), metadata=auth("team-a"))
    finally:
        for j in (first, second):
            stub.CancelJob(pb.CancelJobRequest(id=j.job.id), metadata=auth("team-a"))
