"""The broker end to end over a real gRPC channel: jobs, validation, tenancy, watch."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.serde import state_from_proto
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import PY, auth
from tests.e2e.test_hostile_input import field_violations
from tests.processes import Held

TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def spec(
    name: str, command: list[str], *, gpus: int = 0, runtime_s: int = 600, **extra: object
) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(
        name=name, command=command, runtime_estimate=duration_pb2.Duration(seconds=runtime_s), **extra
    )  # type: ignore[arg-type]
    if gpus:
        msg.resources.accelerators.count = gpus
        msg.resources.accelerators.any_of.append("A800")
    return msg


def submit(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job: job_pb2.JobSpec,
    tenant: str = "team-a",
    client_id: str = "",
) -> pb.SubmitJobResponse:
    return stub.SubmitJob(pb.SubmitJobRequest(job=job, client_id=client_id), metadata=auth(tenant))


def wait_for(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    states: set[int],
    tenant: str = "team-a",
    timeout: float = 30,
) -> job_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {state_from_proto(job.state)}: {job.message}")
        time.sleep(0.1)


def test_health_and_reflection_are_served(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        resp = health.Check(health_pb2.HealthCheckRequest(service="shangzhuang.broker.v1.BrokerService"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        [answer] = reflection.ServerReflectionInfo(iter([ask]))
        names = {s.name for s in answer.list_services_response.service}
        assert "shangzhuang.broker.v1.BrokerService" in names, names


def test_submit_watch_succeeds_with_exit_code_and_output(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    job = submit(stub, spec("hello", [PY, "-c", "print('hello from the job')"])).job
    assert job.state == job_pb2.JOB_STATE_QUEUED
    events = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=auth("team-a"), timeout=60))
    states = [state_from_proto(e.event.state).value for e in events]
    assert states[0] == "QUEUED" and states[-1] == "SUCCEEDED"
    assert "RUNNING" in states or "PROVISIONING" in states
    assert [e.event.seq for e in events] == list(range(1, len(events) + 1))
    final = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job
    assert final.exit_code == 0
    assert "hello from the job" in final.log_tail
    assert final.site == "local"
    assert final.policy_hash


def test_gpu_job_gets_its_own_devices(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    code = "import os; print('CVD=' + os.environ['CUDA_VISIBLE_DEVICES'])"
    job = submit(stub, spec("gpus", [PY, "-c", code], gpus=2)).job
    final = wait_for(stub, job.id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    line = next(ln for ln in final.log_tail.splitlines() if ln.startswith("CVD="))
    assert len(line.removeprefix("CVD=").split(",")) == 2


def test_failing_command_reports_exit_code_and_log_tail(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    code = "import sys; print('about to fail'); sys.exit(3)"
    job = submit(stub, spec("fails", [PY, "-c", code])).job
    final = wait_for(stub, job.id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert final.exit_code == 3
    assert "about to fail" in final.log_tail


def test_a_log_tail_of_chinese_output_starts_on_a_whole_character(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # 5,600 bytes of three-byte characters: the tail's 4 KiB cut falls inside one of them.
    code = "print('第1轮训练完成' * 400)"
    job = submit(stub, spec("chinese-output", [PY, "-c", code])).job
    final = wait_for(stub, job.id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    assert final.log_tail and "\ufffd" not in final.log_tail, final.log_tail[:20]
    assert final.log_tail.rstrip().endswith("第1轮训练完成")


def test_cancel_running_job_kills_the_process(
    stub: broker_service_pb2_grpc.BrokerServiceStub, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # The sandboxed job cannot write to the test's folder: find its process by a marker.
    marker = f"sleeper-{uuid.uuid4().hex}"
    code = f"import time; time.sleep(300)  # {marker}"
    job = submit(stub, spec("sleeper", [PY, "-c", code])).job
    wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
    deadline = time.monotonic() + 10
    pids = _pids_with(marker)
    while not pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = _pids_with(marker)
    (pid,) = pids
    sleeper = Held(pid)
    cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-a")).job
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert sleeper.wait_gone(10), "the job's process survived its cancellation"


def test_cancel_kills_what_the_job_started_that_outlives_its_sigterm(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # The job's main process dies of SIGTERM at once; a helper it started ignores SIGTERM
    # (a data loader, a checkpoint writer that hangs). After the grace period (2 s in
    # conftest) the broker's SIGKILL must reach the helper too, or it keeps running unseen.
    marker = f"stubborn-{uuid.uuid4().hex}"
    helper = (
        f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)  # {marker}"
    )
    main = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {helper!r}]); time.sleep(300)"
    )
    job = submit(stub, spec("stubborn", [PY, "-c", main])).job
    wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
    deadline = time.monotonic() + 10
    pids = [p for p in _pids_with(marker) if _ignores_sigterm(p)]  # the main one carries it too
    while not pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [p for p in _pids_with(marker) if _ignores_sigterm(p)]
    (pid,) = pids
    helper_process = Held(pid)
    cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-a")).job
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    survived = not helper_process.wait_gone(15)
    helper_process.kill()
    assert not survived, "a process the job started survived its cancellation (SIGTERM ignored, no SIGKILL)"


def _ignores_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_cancel_queued_job(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    # More A800s than the site has free right now keeps it queued (4 exist, all taken below).
    hogs = [
        submit(stub, spec(f"hog-{i}", [PY, "-c", "import time; time.sleep(60)"], gpus=4)).job
        for i in range(1)
    ]
    wait_for(stub, hogs[0].id, {job_pb2.JOB_STATE_RUNNING})
    queued = submit(stub, spec("waits", [PY, "-c", "pass"], gpus=4)).job
    time.sleep(0.5)
    assert (
        stub.GetJob(pb.GetJobRequest(id=queued.id), metadata=auth("team-a")).job.state
        == job_pb2.JOB_STATE_QUEUED
    )
    out = stub.CancelJob(pb.CancelJobRequest(id=queued.id), metadata=auth("team-a")).job
    assert out.state == job_pb2.JOB_STATE_CANCELLED
    for hog in hogs:
        stub.CancelJob(pb.CancelJobRequest(id=hog.id), metadata=auth("team-a"))


def test_duplicate_client_id_returns_the_same_job(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    first = submit(stub, spec("idem", [PY, "-c", "pass"]), client_id="retry-123")
    second = submit(stub, spec("idem", [PY, "-c", "pass"]), client_id="retry-123")
    assert first.created and not second.created
    assert first.job.id == second.job.id
    # Another tenant's identical client_id is a different job.
    other = submit(stub, spec("idem", [PY, "-c", "pass"]), tenant="team-b", client_id="retry-123")
    assert other.created and other.job.id != first.job.id
    page = stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth("team-a"))
    assert sum(1 for j in page.jobs if j.client_id == "retry-123") == 1


def test_one_client_id_for_two_jobs_in_a_batch_is_refused_naming_the_second(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    """Review: a batch whose two entries shared a client_id with different jobs stored the first
    and answered it twice; the second job was dropped without a word. Now the batch is refused
    (nothing stored); the same job twice is still one job, answered twice."""
    key = f"batch-{uuid.uuid4().hex[:8]}"
    one = pb.SubmitJobRequest(job=spec("first", [PY, "-c", "pass"]), client_id=key)
    other = pb.SubmitJobRequest(job=spec("second", [PY, "-c", "pass"]), client_id=key)
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(pb.SubmitJobsRequest(requests=[one, other]), metadata=auth("team-a"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1].client_id" in field_violations(err.value), field_violations(err.value)
    listed = stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth("team-a")).jobs
    assert not any(j.client_id == key for j in listed)  # nothing of the batch was stored
    # Named by the batch's own positions, with an entry before them refused for another reason.
    bad = pb.SubmitJobRequest(job=spec("bad", [PY, "-c", "pass"]), client_id="\x01")
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(pb.SubmitJobsRequest(requests=[bad, one, other]), metadata=auth("team-a"))
    named = field_violations(err.value)
    assert "requests[0].client_id" in named and "requests[2].client_id" in named, named
    assert "requests[1]'s" in named["requests[2].client_id"]
    twice = stub.SubmitJobs(pb.SubmitJobsRequest(requests=[one, one]), metadata=auth("team-a"))
    assert twice.responses[0].job.id == twice.responses[1].job.id


def test_tenant_cannot_see_or_cancel_another_tenants_job(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    job = submit(stub, spec("private", [PY, "-c", "import time; time.sleep(2)"]), tenant="team-a").job
    for call, req in (
        (stub.GetJob, pb.GetJobRequest(id=job.id)),
        (stub.CancelJob, pb.CancelJobRequest(id=job.id)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(req, metadata=auth("team-b"))  # type: ignore[operator]
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        list(stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=auth("team-b")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth("team-b")).jobs
    assert job.id not in {j.id for j in listed}
    assert (
        stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job.state
        != job_pb2.JOB_STATE_CANCELLED
    )


def test_missing_or_unknown_token_is_unauthenticated(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    for metadata in ((), (("authorization", "Bearer nope"),), (("authorization", "Basic xyz"),)):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def _bad(**changes: object) -> job_pb2.JobSpec:
    msg = spec("valid-name", [PY, "-c", "pass"])
    for path, value in changes.items():
        target: object = msg
        parts = path.split("__")
        for part in parts[:-1]:
            target = getattr(target, part)
        if isinstance(value, list):
            field = getattr(target, parts[-1])
            del field[:]
            field.extend(value)
        elif value is None:
            target.ClearField(parts[-1])  # type: ignore[attr-defined]
        elif isinstance(value, dict):
            getattr(target, parts[-1]).update(value)
        else:
            setattr(target, parts[-1], value)
    return msg


BAD_SPECS = [
    ("name", _bad(name=""), "required"),
    ("name", _bad(name="Upper_Case"), "[a-z0-9-]"),
    ("name", _bad(name="x" * 64), "at most 63"),
    ("command", _bad(command=[]), "required"),
    ("command", _bad(command=["", "x"]), "must not be empty"),
    ("runtime_estimate", _bad(runtime_estimate=None), "required"),
    ("runtime_estimate", _bad(runtime_estimate__seconds=0), "> 0"),
    ("resources.accelerators.count", _bad(resources__accelerators__count=-1), ">= 0"),
    ("resources.cpus", _bad(resources__cpus=-2), "> 0"),
    ("resources.memory_gb", _bad(resources__memory_gb=-1), "> 0"),
    ("max_price_per_hour", _bad(max_price_per_hour=-5), "> 0"),
    ("max_wait", _bad(max_wait__seconds=-60), ">= 0"),
    ("priority", _bad(priority=42), "unknown"),
    ("env", _bad(env={"1BAD": "x"}), "environment variable"),
    ("labels", _bad(labels={"Bad Key": "x"}), "label key"),
    # (the message said only "1-63 chars of [a-z0-9_.-/]", which "k." seems to meet)
    ("labels", _bad(labels={"k.": "x"}), "ending with a letter or digit"),
    ("resources.accelerators.min_memory_gb", _bad(resources__accelerators__min_memory_gb=-1), ">= 0"),
    # Review: accelerator models or memory asked for with no count ran the job CPU-only, unsaid
    ("resources.accelerators.count", _bad(resources__accelerators__any_of=["A800"]), ">= 1 when any_of"),
    ("resources.accelerators.count", _bad(resources__accelerators__min_memory_gb=64.0), ">= 1 when min_"),
]


@pytest.mark.parametrize(
    ("field", "job", "text"), BAD_SPECS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_SPECS)]
)
def test_bad_spec_is_invalid_argument_naming_the_field(
    stub: broker_service_pb2_grpc.BrokerServiceStub, field: str, job: job_pb2.JobSpec, text: str
) -> None:
    before = stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth("team-b")).jobs
    with pytest.raises(grpc.RpcError) as err:
        submit(stub, job, tenant="team-b", client_id=f"bad-{field}")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = _violations(err.value)
    assert any(f.startswith(field) and text in d for f, d in found), found
    after = stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth("team-b")).jobs
    assert len(after) == len(before), "a rejected job was stored"


def test_batch_with_one_bad_job_stores_nothing(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    good = pb.SubmitJobRequest(job=spec("batch-ok", [PY, "-c", "pass"]))
    bad = pb.SubmitJobRequest(job=_bad(resources__accelerators__count=-1))
    before = len(stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth("team-b")).jobs)
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(pb.SubmitJobsRequest(requests=[good, bad]), metadata=auth("team-b"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("requests[1].job.resources.accelerators.count", "must be >= 0") in _violations(err.value)
    assert len(stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth("team-b")).jobs) == before


def test_unplaceable_job_is_failed_precondition(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    job = spec("too-big", [PY, "-c", "pass"])
    job.resources.accelerators.count = 64
    job.resources.accelerators.any_of.append("A800")
    with pytest.raises(grpc.RpcError) as err:
        submit(stub, job)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_page_token_the_server_never_issued_is_refused(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # A page token is the last job id of the page before; anything else listed from an arbitrary
    # point ('garbage' > every 'j-...' id: all jobs; 'zzz': none) instead of saying it was wrong.
    for token in ("garbage", "zzz", "j-XYZ", "j-1a2' OR 1=1"):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(page_token=token), metadata=auth("team-b"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, token
        assert "page_token" in (err.value.details() or ""), err.value.details()


def test_list_filters_and_pages(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    reqs = [
        pb.SubmitJobRequest(job=spec(f"paged-{i}", [PY, "-c", "pass"], labels={"suite": "paging"}))
        for i in range(7)
    ]
    created = stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=auth("team-b")).responses
    ids = [r.job.id for r in created]
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListJobs(
            pb.ListJobsRequest(labels={"suite": "paging"}, page_size=3, page_token=token),
            metadata=auth("team-b"),
        )
        assert len(page.jobs) <= 3
        seen.extend(j.id for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    for job_id in ids:
        wait_for(stub, job_id, TERMINAL, tenant="team-b")
    done = stub.ListJobs(
        pb.ListJobsRequest(labels={"suite": "paging"}, states=[job_pb2.JOB_STATE_SUCCEEDED], page_size=100),
        metadata=auth("team-b"),
    )
    assert {j.id for j in done.jobs} == set(ids)
    none = stub.ListJobs(
        pb.ListJobsRequest(labels={"suite": "paging"}, states=[job_pb2.JOB_STATE_QUEUED]),
        metadata=auth("team-b"),
    )
    assert list(none.jobs) == []


def test_a_page_token_pages_on_only_the_listing_that_issued_it(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    """A token was the last job id alone: carried to a listing of other states, labels or tenant it
    started that listing at an arbitrary point, silently (AIP-158: INVALID_ARGUMENT)."""
    reqs = [
        pb.SubmitJobRequest(job=spec(f"tied-{i}", [PY, "-c", "pass"], labels={"suite": "tied"}))
        for i in range(3)
    ]
    ids = [
        r.job.id
        for r in stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=auth("team-b")).responses
    ]
    for job_id in ids:
        wait_for(stub, job_id, TERMINAL, tenant="team-b")
    done = [job_pb2.JOB_STATE_SUCCEEDED]
    first = stub.ListJobs(
        pb.ListJobsRequest(labels={"suite": "tied"}, states=done, page_size=1), metadata=auth("team-b")
    )
    assert first.next_page_token
    same = pb.ListJobsRequest(
        labels={"suite": "tied"}, states=done, page_size=5, page_token=first.next_page_token
    )
    assert [j.id for j in stub.ListJobs(same, metadata=auth("team-b")).jobs] == ids[1:]
    for other in (
        pb.ListJobsRequest(labels={"suite": "tied"}, states=[job_pb2.JOB_STATE_FAILED]),
        pb.ListJobsRequest(labels={"suite": "other"}, states=done),
        pb.ListJobsRequest(states=done),
    ):
        other.page_token = first.next_page_token
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(other, metadata=auth("team-b"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token: was issued for a listing with other filters" in (err.value.details() or "")


def test_watch_resumed_from_seq_gets_exactly_the_later_events(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    job = submit(stub, spec("resume", [PY, "-c", "print('x')"])).job
    wait_for(stub, job.id, TERMINAL)
    full = [
        e.event for e in stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=auth("team-a"), timeout=30)
    ]
    assert len(full) >= 4
    for n in (1, 2, len(full) - 1):
        resumed = [
            e.event
            for e in stub.WatchJob(
                pb.WatchJobRequest(id=job.id, after_seq=n), metadata=auth("team-a"), timeout=30
            )
        ]
        assert [e.seq for e in resumed] == [e.seq for e in full[n:]]
        assert [e.kind for e in resumed] == [e.kind for e in full[n:]]


def test_hostile_requests_get_clear_errors(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    cases = [
        (stub.GetJob, pb.GetJobRequest(id=""), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.GetJob, pb.GetJobRequest(id="x" * 10_000), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.GetJob, pb.GetJobRequest(id="j-doesnotexist"), grpc.StatusCode.NOT_FOUND),
        (stub.ListJobs, pb.ListJobsRequest(page_size=-1), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.ListJobs, pb.ListJobsRequest(states=[99]), grpc.StatusCode.INVALID_ARGUMENT),
        (
            stub.SubmitJob,
            pb.SubmitJobRequest(job=spec("ok", ["true"]), client_id="c" * 1000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for call, req, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            call(req, metadata=auth("team-a"))  # type: ignore[operator]
        assert err.value.code() == code, (req, err.value.details())
