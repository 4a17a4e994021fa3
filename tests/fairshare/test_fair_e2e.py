"""Fair share end to end on the local executor: a real `szb serve`, real gRPC, real processes.

Covers issue 14: a flooding tenant does not delay another tenant's job beyond one job's
runtime; a tenant cannot declare `high` unless granted; `szb list` says where a job stands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, ROOT, BrokerProcess, running_broker, write_broker_folder
from tests.local_policy import a800, cpu, local_policy

TOKENS = {"flood": "token-flood-0123456789", "small": "token-small-0123456789", "vip": "token-vip-01234567"}
SLOTS = 4
JOB_S = 1.5

POLICY = local_policy(
    "  - {id: flood, kind: university, entity_country: CN}\n"
    "  - {id: small, kind: university, entity_country: CN}\n"
    "  - {id: vip, kind: institute, entity_country: CN,"
    " share: {weight: 2, priorities: [low, normal, high]}}\n",
    a800(SLOTS),
    cpu(8),
    rest="fair_share: {half_life: 1h}\n",
    objective=True,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(write_broker_folder(tmp_path_factory.mktemp("fair"), POLICY, TOKENS)) as proc:
        yield proc


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def gpu_job(name: str, seconds: float, **extra: object) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"],
        runtime_estimate=duration_pb2.Duration(seconds=60),
        **extra,  # type: ignore[arg-type]
    )
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append("A800")
    return msg


def placed_at(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, tenant: str) -> datetime | None:
    events = stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=auth(tenant), timeout=5)
    try:
        for resp in events:
            if resp.event.kind == "placed":
                return resp.event.time.ToDatetime()
            if resp.event.state in (job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_SUCCEEDED):
                break
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return None


def wait_state(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    tenant: str,
    states: set[int],
    timeout: float = 90,
) -> job_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job
        if job.state in states:
            return job
        assert time.monotonic() < deadline, f"{job_id} stuck: {job.message}"
        time.sleep(0.1)


def test_high_priority_without_a_grant_is_invalid_argument(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(
            pb.SubmitJobRequest(job=gpu_job("hi", 0, priority=job_pb2.PRIORITY_HIGH)), metadata=auth("small")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert [v.field for v in bad.field_violations] == ["priority"]
    assert "not granted priority 'high'" in bad.field_violations[0].description
    # Batch: the field names the item; nothing of the batch is stored.
    before = stub.ListJobs(pb.ListJobsRequest(), metadata=auth("small")).jobs
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(
            pb.SubmitJobsRequest(
                requests=[
                    pb.SubmitJobRequest(job=gpu_job("ok", 0)),
                    pb.SubmitJobRequest(job=gpu_job("hi", 0, priority=job_pb2.PRIORITY_HIGH)),
                ]
            ),
            metadata=auth("small"),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1].job.priority" in (err.value.details() or "")
    assert len(stub.ListJobs(pb.ListJobsRequest(), metadata=auth("small")).jobs) == len(before)
    # Explain answers as the submit would (it placed the job as if it were granted).
    with pytest.raises(grpc.RpcError) as err:
        asked = pb.ExplainPlacementRequest(job=gpu_job("hi", 0, priority=job_pb2.PRIORITY_HIGH))
        stub.ExplainPlacement(asked, metadata=auth("small"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job.priority" in (err.value.details() or "") and "not granted priority 'high'" in (
        err.value.details() or ""
    )
    # A granted tenant may.
    granted = pb.ExplainPlacementRequest(job=gpu_job("vip-hi", 0, priority=job_pb2.PRIORITY_HIGH))
    assert stub.ExplainPlacement(granted, metadata=auth("vip")).explanation.offers
    job = stub.SubmitJob(
        pb.SubmitJobRequest(job=gpu_job("vip-hi", 0, priority=job_pb2.PRIORITY_HIGH)), metadata=auth("vip")
    ).job
    wait_state(stub, job.id, "vip", {job_pb2.JOB_STATE_SUCCEEDED})


def test_flooding_tenant_does_not_delay_a_small_tenants_job(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    flood = stub.SubmitJobs(
        pb.SubmitJobsRequest(
            requests=[pb.SubmitJobRequest(job=gpu_job(f"f{i}", JOB_S)) for i in range(6 * SLOTS)]
        ),
        metadata=auth("flood"),
    ).responses
    ids = [r.job.id for r in flood]
    # Wait until the flood holds every slot and has a queue behind it.
    wait_state(stub, ids[SLOTS - 1], "flood", {job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_SUCCEEDED})
    queued = wait_state(stub, ids[-1], "flood", {job_pb2.JOB_STATE_QUEUED})

    # `szb list` says where a queued flood job stands and how far over its share the tenant is.
    env = {
        **os.environ,
        "SZB_SERVER": broker.address,
        "SZB_TOKEN": TOKENS["flood"],
        "GRPC_VERBOSITY": "ERROR",
    }
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(
            [sys.executable, "-m", "broker.cli", "list", "--state", "queued", "--output", "json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        messages = {j["id"]: j.get("message", "") for j in json.loads(out)["jobs"]}
        if "tenant order" in messages.get(queued.id, ""):
            break
        assert time.monotonic() < deadline, messages
        time.sleep(0.2)
    assert "tenant flood at" in messages[queued.id] and "× its share" in messages[queued.id]

    submitted = stub.SubmitJob(pb.SubmitJobRequest(job=gpu_job("mine", 0)), metadata=auth("small")).job
    # Submitted once the broker answers: its create time is stamped before the store commit, and a
    # pass that began in between may fill the slots it frees with the work it had already read.
    answered = datetime.now(UTC).replace(tzinfo=None)
    done = wait_state(stub, submitted.id, "small", {job_pb2.JOB_STATE_SUCCEEDED})
    mine = placed_at(stub, done.id, "small")
    assert mine is not None
    # No flood job took a freed slot between the small job's submission and its start: the
    # first slot to free went to it (so it waited at most one flood job's runtime).
    jumped = []
    for job_id in ids:
        at = placed_at(stub, job_id, "flood")
        if at is not None and answered < at < mine:
            jumped.append(job_id)
    assert not jumped, f"flood jobs started ahead of the small tenant's job: {jumped}"
    for job_id in ids:  # and the flood still completes
        wait_state(stub, job_id, "flood", {job_pb2.JOB_STATE_SUCCEEDED})


def test_explain_says_where_a_new_job_would_stand(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    ex = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=gpu_job("what-if", 1)), metadata=auth("small"))
    decision = json.loads(ex.explanation.decision_json)
    standing = decision["fair_share"]["standing"]
    assert re.fullmatch(
        r"\d+(st|nd|rd|th) in tenant order \((within its quota|borrowed)\); "
        r"tenant small at \d+\.\d× its share",
        standing,
    ), standing
    assert standing in decision["reasons"]
