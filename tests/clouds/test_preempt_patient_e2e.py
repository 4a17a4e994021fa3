"""Stopping patient work rather than bursting urgent work, live (`burst.preempt_patient`, issue 15).

A real `szb serve`: one local A800 at 1 CNY/h and AWS on moto (a g5.xlarge at 7.24 CNY/h). A
patient job (max_wait 4 h, ten hours of work) takes the A800; an urgent job (max_wait 1 min) then
arrives, and on-prem it would wait ten hours, so it would burst. With the knob on, the patient job
is preempted and requeued (saying for which job) and the urgent job runs on the A800; off, the
urgent job bursts.
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.clouds.test_broker_bursts import ec2_instances
from tests.doubles.moto_front import MotoFront

Stub = broker_service_pb2_grpc.BrokerServiceStub


def policy(knob: str) -> str:
    return (
        on_moto.POLICY_HEAD
        + on_moto.ONPREM_A800.replace("price_hour: 14.0", "price_hour: 1.0")
        + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
        + on_moto.sg_lab_tail(f"preempt_patient: {{enabled: {knob}}}")
        + "fair_share:\n  reclaim: {grace: 5s}\n"
    )


def start(start_broker: StartBroker, moto: MotoFront, knob: str) -> str:
    broker = start_broker(
        on_moto.BrokerSetup(
            policy(knob),
            tokens={"sg-lab": TOKEN},
            sites={"aws-east": on_moto.aws_on_moto(moto.url)},
            catalogs={"aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a")},
        )
    )
    return broker.address


def job(name: str, code: str, *, max_wait_s: int, estimate_s: int) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", code],
        runtime_estimate=duration_pb2.Duration(seconds=estimate_s),
        max_wait=duration_pb2.Duration(seconds=max_wait_s),
    )
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.extend(["A800", "A10G"])
    return msg


def patient_code(marks: Path) -> str:
    """Ten hours of work that notes it is ready, and the SIGTERM it gets, then exits."""
    return textwrap.dedent(f"""\
        import os, signal, sys, time
        marks = {str(marks)!r}
        def term(*_):
            open(os.path.join(marks, "term-" + str(os.getpid())), "w").close()
            sys.exit(143)
        signal.signal(signal.SIGTERM, term)
        open(os.path.join(marks, "ready-" + str(os.getpid())), "w").close()
        time.sleep(300)
        """)


def history(stub: Stub, job_id: str) -> list[job_pb2.JobEvent]:
    """A live job's history so far (its stream is cut after 2 s)."""
    out = []
    try:
        for resp in stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=md(), timeout=2):
            out.append(resp.event)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return out


def until(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def patient_running(stub: Stub, marks: Path) -> str:
    spec = job("patient", patient_code(marks), max_wait_s=4 * 3600, estimate_s=10 * 3600)
    patient = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job.id
    running = wait_state(stub, patient, {job_pb2.JOB_STATE_RUNNING})
    assert running.site == "onprem"
    until(lambda: any(marks.glob("ready-*")), "the patient job is ready for SIGTERM")
    return patient


def urgent(stub: Stub) -> str:
    spec = job("urgent", "print('urgent ran')", max_wait_s=60, estimate_s=3600)
    return stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md()).job.id


def marks_folder() -> Path:
    # Jobs run sandboxed as the job user, who cannot enter the test's private tmp folder.
    marks = Path(tempfile.mkdtemp(prefix="szb-marks-"))
    marks.chmod(0o1777)
    return marks


def test_the_patient_job_is_stopped_and_the_urgent_one_runs_at_home(
    moto: MotoFront, start_broker: StartBroker
) -> None:
    marks = marks_folder()
    with grpc.insecure_channel(start(start_broker, moto, "true")) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        patient = patient_running(stub, marks)
        # Explain says what the dispatcher would do, and stops nothing.
        spec = job("urgent", "print('urgent ran')", max_wait_s=60, estimate_s=3600)
        said = str(stub.ExplainPlacement(pb.ExplainPlacementRequest(job=spec), metadata=md()).explanation)
        assert "stopping patient job on onprem/a800" in said and "burst.preempt_patient" in said, said
        assert get_state(stub, patient) == job_pb2.JOB_STATE_RUNNING
        assert not list(marks.glob("term-*")), "explain stopped nothing"
        first = urgent(stub)
        try:
            stopped_for(stub, moto, marks, patient, first)
        finally:
            for j in (first, patient):
                stub.CancelJob(pb.CancelJobRequest(id=j), metadata=md())


def stopped_for(stub: Stub, moto: MotoFront, marks: Path, patient: str, first: str) -> None:
    """The urgent job ran at home, the patient one was stopped for it, nothing burst."""
    deadline = time.monotonic() + 60
    while (done := stub.GetJob(pb.GetJobRequest(id=first), metadata=md()).job).state != (
        job_pb2.JOB_STATE_SUCCEEDED
    ):
        assert done.site != "aws-east", f"it burst: {done.message}"
        assert time.monotonic() < deadline, done.message
        time.sleep(0.1)
    assert done.site == "onprem", done.message

    seen: list[job_pb2.JobEvent] = []

    def requeued() -> bool:
        nonlocal seen
        seen = max(seen, history(stub, patient), key=len)
        kinds = [e.kind for e in seen]
        return "preempted" in kinds and "requeued" in kinds[kinds.index("preempted"):]

    until(requeued, "the patient job's history shows it preempted and requeued")
    kinds = [e.kind for e in seen]
    ev = seen[kinds.index("preempted")]
    assert ev.data["for_job"] == first
    assert first in ev.message and "burst" in ev.message and "CNY more" in ev.message, ev.message
    assert len(list(marks.glob("term-*"))) == 1, "the patient job got SIGTERM and could clean up"
    waited = [e.message for e in history(stub, first) if e.kind == "waiting"]
    assert any("burst.preempt_patient" in m for m in waited), waited
    assert ec2_instances(moto, "us-east-1") == [], "nothing launched at the cloud"


def test_with_the_knob_off_the_urgent_job_bursts(moto: MotoFront, start_broker: StartBroker) -> None:
    marks = marks_folder()
    with grpc.insecure_channel(start(start_broker, moto, "false")) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        patient = patient_running(stub, marks)
        first = urgent(stub)
        try:
            placed = wait_state(
                stub, first, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}, timeout=60
            )
            assert placed.site == "aws-east", placed.message
            assert get_state(stub, patient) == job_pb2.JOB_STATE_RUNNING
            assert not list(marks.glob("term-*"))
        finally:
            for j in (first, patient):
                stub.CancelJob(pb.CancelJobRequest(id=j), metadata=md())


def get_state(stub: Stub, job_id: str) -> int:
    return int(stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job.state)
