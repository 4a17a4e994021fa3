"""Within a tenant, priority then age: an older job that fits the tenant's quota whole is not
overtaken for ever by the tenant's newer small jobs as its own running work frees the quota.

Found by a held-out review of issue 14: with a quota, each GPU that freed let one of the tenant's
newer 1-GPU jobs count as "within quota" and start, so the older 4-GPU job waited behind all 16
(without a quota it went first).
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import running_broker, write_broker_folder
from tests.fairshare.local_site import Metadata, a800_job, bearer, policy

TOKENS = {"a": "token-aaaa-0123456789", "b": "token-bbbb-0123456789"}
POLICY = policy(
    "  - {id: a, kind: institute, entity_country: CN, share: {quota: {local/a800: 4}}}\n"
    "  - {id: b, kind: institute, entity_country: CN}",
    per_node=4, rest="fair_share: {half_life: 1h}",
)
RUNNING = job_pb2.JOB_STATE_RUNNING
DONE = (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)


def auth() -> Metadata:
    return bearer(TOKENS, "a")


def job(name: str, seconds: float, gpus: int = 1) -> job_pb2.JobSpec:
    return a800_job(name, f"import time; time.sleep({seconds})", gpus=gpus, estimate_s=60)


def test_an_older_job_owed_its_tenant_s_quota_goes_before_the_tenant_s_newer_small_jobs(
    tmp_path: Path,
) -> None:
    with running_broker(write_broker_folder(tmp_path, POLICY, TOKENS)) as proc, \
            grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def get(job_id: str) -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job

        def submit(spec: job_pb2.JobSpec) -> str:
            return stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id

        # The quota's four GPUs busy, freed one at a time (2, 3, 4 and 5 s from now).
        first = [submit(job(f"first{i}", 2 + i)) for i in range(4)]
        deadline = time.monotonic() + 60
        while not all(get(j).state == RUNNING for j in first):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        big = submit(job("big", 0, gpus=4))
        newer = [submit(job(f"newer{i}", 3)) for i in range(12)]
        while get(big).state not in DONE:
            assert time.monotonic() < deadline + 60, get(big).message
            time.sleep(0.2)
        big_start = get(big).start_time.ToDatetime()
        started = [j for j in map(get, newer) if j.HasField("start_time")]
        ahead = [j for j in started if j.start_time.ToDatetime() < big_start]
        for job_id in newer:
            stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
        assert get(big).state == job_pb2.JOB_STATE_SUCCEEDED
        assert not ahead, f"{len(ahead)} of the tenant's newer jobs started before its older 4-GPU job"
