"""Hostile input over a real channel: every bad value is INVALID_ARGUMENT naming its field.

Covers issue 10's observations 2 (poison specs) and 3 (INTERNAL/UNKNOWN on bad input) and the
`image` / `SZB_*` items of observation 8, against a real `szb serve` with two tenants.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.client import BrokerClient
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import TOKENS, auth, write_broker_config

SUBMIT = "/shangzhuang.broker.v1.BrokerService/SubmitJob"
WATCH = "/shangzhuang.broker.v1.BrokerService/WatchJob"
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def job(name: str = "hostile", command: tuple[str, ...] = ("true",)) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=list(command))
    msg.runtime_estimate.seconds = 60
    return msg


def field_violations(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, err
    out: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def _set(path: str, value: object) -> Callable[[job_pb2.JobSpec], None]:
    def mutate(msg: job_pb2.JobSpec) -> None:
        *parents, leaf = path.split(".")
        target = msg
        for p in parents:
            target = getattr(target, p)
        setattr(target, leaf, value)

    return mutate


def _env(key: str) -> Callable[[job_pb2.JobSpec], None]:
    def mutate(msg: job_pb2.JobSpec) -> None:
        msg.env[key] = "x"

    return mutate


def _label(key: str) -> Callable[[job_pb2.JobSpec], None]:
    def mutate(msg: job_pb2.JobSpec) -> None:
        msg.labels[key] = "x"

    return mutate


# (mutation of a valid spec, the field the violation must name, words in its description)
BAD_VALUES = [
    (
        _set("resources.accelerators.min_memory_gb", float("inf")),
        "resources.accelerators.min_memory_gb",
        "finite",
    ),
    (
        _set("resources.accelerators.min_memory_gb", float("nan")),
        "resources.accelerators.min_memory_gb",
        "finite",
    ),
    (_set("resources.cpus", float("inf")), "resources.cpus", "finite"),
    (_set("resources.memory_gb", float("nan")), "resources.memory_gb", "finite"),
    (_set("max_price_per_hour", float("inf")), "max_price_per_hour", "finite"),
    (_set("runtime_estimate.seconds", 0), "runtime_estimate", ""),
    (_set("runtime_estimate.nanos", 500_000_000), "runtime_estimate", "whole number of seconds"),
    (_set("runtime_estimate.seconds", -(2**63)), "runtime_estimate", "Duration"),
    (_set("runtime_estimate.seconds", 2**62), "runtime_estimate", "Duration"),
    # (said "must be at most 10 years", every duration's bound, where 100 days said this field's)
    (_set("runtime_estimate.seconds", 10**11), "runtime_estimate", "must be at most 90d"),
    (_set("max_wait.seconds", 10**11), "max_wait", "10 years"),
    (_set("max_wait.nanos", -1), "max_wait", ""),
    (_set("deadline.nanos", -1), "deadline", "Timestamp"),
    (_set("deadline.nanos", 999), "deadline", "whole number of microseconds"),  # not truncated to 0
    (_set("deadline.seconds", 2**62), "deadline", "Timestamp"),
    (_set("deadline.seconds", -(2**40)), "deadline", "Timestamp"),
    (_set("deadline.seconds", 253402300799), "deadline", "9000"),
    (_set("image", "--privileged"), "image", "OCI image reference"),
    (_set("image", "ubuntu:22.04 --privileged"), "image", "OCI image reference"),
    (_set("image", "-v/:/host"), "image", "OCI image reference"),
    (_env("SZB_TOKEN"), "env", "SZB_TOKEN"),
    (_env("SZB_AGENT_ENDPOINT"), "env", "reserved"),
    # A line break after a valid name: it would end the line of a cloud boot script (env) early.
    (_env("EPOCHS\n"), "env", "not a valid environment variable name"),
    (_label("team\n"), "labels", "must be 1-63 chars"),
    (_set("priority", 99), "priority", "unknown enum"),
    (_set("resources.accelerators.count", -1), "resources.accelerators.count", ">= 0"),
]


@pytest.mark.parametrize(("mutate", "field", "words"), BAD_VALUES)
def test_a_bad_value_is_invalid_argument_naming_its_field(
    broker: BrokerProcess, mutate: Callable[[job_pb2.JobSpec], None], field: str, words: str
) -> None:
    msg = job()
    mutate(msg)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(pb.SubmitJobRequest(job=msg), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        violations = field_violations(err.value)
        assert field in violations, violations
        assert words in violations[field]
        # Batch and explain take the same path, with the index in the field name.
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJobs(
                pb.SubmitJobsRequest(requests=[pb.SubmitJobRequest(job=job()), pb.SubmitJobRequest(job=msg)]),
                metadata=auth("team-a"),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"requests[1].job.{field}" in field_violations(err.value)
        with pytest.raises(grpc.RpcError) as err:
            stub.ExplainPlacement(pb.ExplainPlacementRequest(job=msg), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_huge_filters_are_invalid_argument_not_internal(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        many = {f"k{i}": "v" for i in range(2000)}
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(labels=many), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "labels" in field_violations(err.value)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(labels={"k": "v" * 5000}), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Repeated states are one filter each, however often they are sent.
        states = [job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_FAILED] * 1000
        stub.ListJobs(pb.ListJobsRequest(states=states, labels={"a": "b"}), metadata=auth("team-a"))
        with pytest.raises(grpc.RpcError) as err:
            stub.ListJobs(pb.ListJobsRequest(states=[77]), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_label_filter_of_a_key_no_job_can_have_is_invalid_argument(broker: BrokerProcess) -> None:
    # (`szb list --label =x`: an empty list, as if no job had the label)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        for key in ("", "Team", "-x"):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListJobs(pb.ListJobsRequest(labels={key: "x", "ok": "y"}), metadata=auth("team-a"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert list(field_violations(err.value)) == [f"labels.{key}"], field_violations(err.value)


def test_an_oversized_tenant_filter_is_invalid_argument_naming_it(broker: BrokerProcess) -> None:
    # The answer used to quote the whole value ("tenant 'xxx…' not found"): over gRPC's 16 KiB
    # metadata limit the client saw RESOURCE_EXHAUSTED "Stream removed" and no field.
    big = "x" * 100_000
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        calls = [
            lambda: stub.GetSpend(pb.GetSpendRequest(tenant=big), metadata=auth("team-a")),
            lambda: stub.ListOffers(pb.ListOffersRequest(tenant=big), metadata=auth("team-a")),
            lambda: stub.ListJobs(pb.ListJobsRequest(tenant=big), metadata=auth("team-a")),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert "at most 128 characters" in field_violations(err.value)["tenant"]


def test_an_offers_filter_of_many_accelerators_is_refused_naming_it(broker: BrokerProcess) -> None:
    # 100,000 unknown names took 3.7 s of "did you mean" matching on the event loop, during which
    # every other tenant's call waited; the time grew with the list (a 32 MiB message holds millions).
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListOffers(pb.ListOffersRequest(accelerators=[f"gpu-{i}" for i in range(100_000)]),
                            metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "at most 64" in field_violations(err.value)["accelerators"]
        with pytest.raises(grpc.RpcError) as err:
            long_name = pb.ListOffersRequest(accelerators=["A800", "x" * 100_000])
            stub.ListOffers(long_name, metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "at most 128 characters" in field_violations(err.value)["accelerators[1]"]
        ok = stub.ListOffers(pb.ListOffersRequest(accelerators=["A800"] * 64), metadata=auth("team-a"))
        assert ok.offers


def test_an_answer_naming_many_or_long_values_still_reaches_the_client(broker: BrokerProcess) -> None:
    # The status travels in trailing metadata, which clients cut at 16 KiB: a batch of 2,000
    # bad jobs, or an error quoting a 40 KB env name, came back as RESOURCE_EXHAUSTED
    # "Stream removed" with no field at all.
    bad = job()
    bad.resources.cpus = -1
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJobs(pb.SubmitJobsRequest(requests=[pb.SubmitJobRequest(job=bad)] * 2000),
                            metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        violations = field_violations(err.value)
        assert "requests[0].job.resources.cpus" in violations, violations
        assert "1980 more violation(s)" in violations[""], violations
        long_name = job()
        long_name.env["A-" * 20_000] = "x"
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(pb.SubmitJobRequest(job=long_name), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "not a valid environment variable name" in field_violations(err.value)["env"]


def test_undecodable_bytes_are_invalid_argument_without_a_traceback(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        raw_submit = channel.unary_unary(SUBMIT)
        raw_watch = channel.unary_stream(WATCH)
        for i in range(200):
            body = bytes([0xFF, 0xFF, 0xFF, i % 256]) if i % 2 else b"\x0a\x05\xc3\x28abc"
            with pytest.raises(grpc.RpcError) as err:
                raw_submit(body, metadata=auth("team-a"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(err.value)
        with pytest.raises(grpc.RpcError) as err:
            list(raw_watch(b"\xff\xff", metadata=auth("team-a")))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Unauthenticated bytes are never decoded (review: a caller with no token could make the
        # broker parse 32 MiB messages): UNAUTHENTICATED, garbage or not, on streams too.
        for body in (b"\xff\xff\xff", pb.SubmitJobRequest(job=job_pb2.JobSpec(name="x")).SerializeToString()):
            for metadata in ((), (("authorization", "Bearer not-a-token"),)):
                with pytest.raises(grpc.RpcError) as err:
                    raw_submit(body, metadata=metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            list(raw_watch(b"\xff\xff"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Server reflection's request stream too (it answered UNKNOWN, with a traceback each time).
        reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as err:
            list(reflect(iter([b"\xff\xff\xff\xff\x0f"])))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The health service's calls too (Watch and List answered UNKNOWN, with a traceback each time).
        health = "/grpc.health.v1.Health/"
        for call in (channel.unary_unary(health + "Check"), channel.unary_unary(health + "List")):
            with pytest.raises(grpc.RpcError) as err:
                call(b"\xff\xff\xff")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, call
        with pytest.raises(grpc.RpcError) as err:
            list(channel.unary_stream(health + "Watch")(b"\xff\xff\xff", timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A well-formed List, which the health servicer lacks: UNIMPLEMENTED, without a traceback
        # per request in the log (a review: anyone could fill it, before authentication).
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(health + "List")(b"")
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    log = "".join(broker.output)
    assert "Traceback" not in log and "ERROR" not in log
    warnings = [line for line in broker.output if "undecodable request" in line]
    assert warnings, "no warning for 206 undecodable requests"
    # Rate-limited: one line, then at most one more per 10 s (by the lines' own timestamps), each
    # later line counting the requests held back since the one before; never one per request.
    stamps = [datetime.strptime(w[:23], "%Y-%m-%d %H:%M:%S,%f") for w in warnings]
    gaps = [(b - a).total_seconds() for a, b in pairwise(stamps)]
    assert all(gap >= 9.99 for gap in gaps), warnings
    held = sum(int(m.group(1)) for w in warnings if (m := re.search(r"\((\d+) more since", w)))
    assert len(warnings) + held <= 206, warnings  # the 206 bad requests, each logged or counted once at most


INVALID_UTF8 = [
    # (spec text replaced by bytes that are not UTF-8, the field the violation names)
    ("labels", "job.labels"),
    ("command", "job.command[1]"),
    ("name", "job.name"),
    ("env", "job.env"),
]


@pytest.mark.parametrize(("where", "field"), INVALID_UTF8)
def test_text_that_is_not_utf8_is_invalid_argument_naming_its_field(
    broker: BrokerProcess, where: str, field: str
) -> None:
    msg = job(name="nameqq", command=("true", "argqq"))
    msg.labels["team"] = "labelqq"
    msg.env["MY_SETTING"] = "envqq"
    marker = {"labels": b"labelqq", "command": b"argqq", "name": b"nameqq", "env": b"envqq"}[where]
    spec = msg.SerializeToString().replace(marker, b"\xff\xfe" + marker[2:])
    single = b"\x0a" + bytes([len(spec)]) + spec  # SubmitJobRequest.job
    batch = b"\x0a" + bytes([len(single)]) + single  # SubmitJobsRequest.requests[0]
    with grpc.insecure_channel(broker.address) as channel:
        for method, body, prefix in ((SUBMIT, single, ""), (SUBMIT + "s", batch, "requests[0].")):
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(method)(body, metadata=auth("team-a"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(err.value) == {prefix + field: "must be valid UTF-8 text"}


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(write_broker_config(tmp_path / "poison"))
    yield proc
    proc.stop()


def wait_terminal(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, tenant: str) -> job_pb2.Job:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job
        if got.state in TERMINAL:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{job_id} did not finish")


def test_a_poison_row_is_quarantined_and_the_broker_starts(own_broker: BrokerProcess) -> None:
    own_broker.start()
    with grpc.insecure_channel(own_broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        ids = [
            stub.SubmitJob(
                pb.SubmitJobRequest(job=job(name=f"p{i}", command=("sleep", "30"))), metadata=auth("team-a")
            ).job.id
            for i in range(2)
        ]
    own_broker.stop()
    # Rows as main wrote them for `runtime_estimate: 0.5s` and `min_memory_gb: +inf`, one of
    # them caught half-placed: written into the database file itself, the broker's backend.
    db = sqlite3.connect(own_broker.config.parent / "data" / "broker.db")
    with db:
        spec0 = db.execute("SELECT spec FROM jobs WHERE id=?", (ids[0],)).fetchone()[0]
        db.execute(
            "UPDATE jobs SET spec=?, state='PLACING' WHERE id=?", (spec0.replace('"1m"', '"0s"'), ids[0])
        )
        spec1 = db.execute("SELECT spec FROM jobs WHERE id=?", (ids[1],)).fetchone()[0]
        db.execute(
            "UPDATE jobs SET spec=?, state='QUEUED' WHERE id=?",
            (spec1.replace('"min_memory_gb":0.0', '"min_memory_gb":null'), ids[1]),
        )
        db.execute("DELETE FROM attempts WHERE job_id IN (?, ?)", ids)
    db.close()
    own_broker.start()
    with grpc.insecure_channel(own_broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        for job_id in ids:
            got = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth("team-a")).job
            assert got.state == job_pb2.JOB_STATE_FAILED and got.message.startswith("unreadable spec"), got
            kinds = [
                r.event.kind for r in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=auth("team-a"))
            ]
            assert "quarantined" in kinds
        listed = stub.ListJobs(pb.ListJobsRequest(), metadata=auth("team-a")).jobs
        assert sorted(j.id for j in listed) == sorted(ids)
        cancelled = stub.CancelJob(pb.CancelJobRequest(id=ids[1]), metadata=auth("team-a")).job
        assert cancelled.state == job_pb2.JOB_STATE_FAILED
        # Another tenant's work is scheduled as usual.
        other = stub.SubmitJob(pb.SubmitJobRequest(job=job(name="other")), metadata=auth("team-b")).job
        assert wait_terminal(stub, other.id, "team-b").state == job_pb2.JOB_STATE_SUCCEEDED
    assert "quarantined" in "".join(own_broker.output)


def test_a_page_of_large_specs_ends_early_and_paging_finds_every_job(broker: BrokerProcess) -> None:
    """Large specs cannot make ListJobs outgrow the message limit (issue 10, observation 5)."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        big = job(name="big")
        big.env["PAYLOAD"] = "p" * 60_000
        big.labels["size"] = "big"
        ids: set[str] = set()
        for batch in range(2):
            requests = [pb.SubmitJobRequest(job=big, client_id=f"big-{batch}-{i}") for i in range(40)]
            answer = stub.SubmitJobs(pb.SubmitJobsRequest(requests=requests), metadata=auth("team-b"))
            ids |= {r.job.id for r in answer.responses}
        seen: list[str] = []
        token, pages = "", 0
        while True:
            page = stub.ListJobs(
                pb.ListJobsRequest(labels={"size": "big"}, page_size=1000, page_token=token),
                metadata=auth("team-b"),
            )
            pages += 1
            seen.extend(j.id for j in page.jobs)
            assert page.ByteSize() < 4 * 1024 * 1024
            token = page.next_page_token
            if not token:
                break
        assert pages >= 2 and sorted(seen) == sorted(ids)


def test_a_batch_of_large_specs_is_answered_within_a_default_clients_limit(broker: BrokerProcess) -> None:
    """Review: SubmitJobs echoed every spec, so 75 jobs of 60 KB stored all 75 and then answered a
    4.5 MB message that gRPC's default client limit (4 MiB) refused: `szb submit` said
    RESOURCE_EXHAUSTED, and sending again stored every job twice."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        big = job(name="echo")
        big.env["PAYLOAD"] = "p" * 60_000
        requests = [pb.SubmitJobRequest(job=big, client_id=f"echo-{i}") for i in range(90)]
        answer = stub.SubmitJobs(pb.SubmitJobsRequest(requests=requests), metadata=auth("team-b"))
        assert answer.ByteSize() < 4 * 1024 * 1024
        assert [r.created for r in answer.responses] == [True] * 90
        ids = [r.job.id for r in answer.responses]
        assert len(set(ids)) == 90 and all(ids)
        echoed = [r for r in answer.responses if r.job.HasField("spec")]
        assert echoed and all(r.job.spec == big for r in echoed)  # as many as fit, the rest by GetJob
        last = stub.GetJob(pb.GetJobRequest(id=ids[-1]), metadata=auth("team-b")).job
        assert last.spec.env["PAYLOAD"] == big.env["PAYLOAD"]
        # Sent again (the client never saw an answer, say): the same jobs, none stored twice.
        again = stub.SubmitJobs(pb.SubmitJobsRequest(requests=requests), metadata=auth("team-b"))
        assert [r.job.id for r in again.responses] == ids and not any(r.created for r in again.responses)


def test_a_spec_larger_than_a_default_clients_limit_is_answered_without_it(tmp_path: Path) -> None:
    """Review: with `max_spec_bytes` raised to 8 MiB, a 5 MiB spec was stored, then answered in a
    message a default client (4 MiB) refused: RESOURCE_EXHAUSTED for a stored job, and ListJobs
    could never page past it. Such a job's answers leave its spec out; GetJob has it."""
    config = write_broker_config(tmp_path)
    policy = (tmp_path / "policy.yaml").read_text()
    (tmp_path / "policy.yaml").write_text(policy.replace(
        "limits: {max_queued_jobs: 20000, submit_burst: 20000}",
        "limits: {max_queued_jobs: 20000, submit_burst: 20000, max_spec_bytes: 8388608}",
    ))
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            big = job(name="huge")
            big.env["PAYLOAD"] = "p" * (5 * 1024 * 1024)
            answer = stub.SubmitJob(pb.SubmitJobRequest(job=big, client_id="huge-1"), metadata=auth("team-a"))
            assert answer.created and answer.job.id and not answer.job.HasField("spec")
            listed = stub.ListJobs(pb.ListJobsRequest(), metadata=auth("team-a")).jobs
            assert [j.id for j in listed] == [answer.job.id] and not listed[0].HasField("spec")
            # szb's client fills in the spec: the one it sent, or the stored one for a client id
            # that already names a job (its name was printed blank).
            with BrokerClient(broker.address, TOKENS["team-a"]) as client:
                [again] = client.submit([pb.SubmitJobRequest(job=big, client_id="huge-1")])
            assert not again.created and again.job.spec.name == "huge"
            cancelled = stub.CancelJob(pb.CancelJobRequest(id=answer.job.id), metadata=auth("team-a")).job
            assert cancelled.id == answer.job.id and not cancelled.HasField("spec")
        # A client that takes the broker's 32 MiB (szb does) reads the whole spec with GetJob.
        wide_open = [("grpc.max_receive_message_length", 1 << 25)]
        with grpc.insecure_channel(broker.address, options=wide_open) as wide:
            whole = broker_service_pb2_grpc.BrokerServiceStub(wide).GetJob(
                pb.GetJobRequest(id=answer.job.id), metadata=auth("team-a")).job
            assert whole.spec.env["PAYLOAD"] == big.env["PAYLOAD"]
    finally:
        broker.stop()
