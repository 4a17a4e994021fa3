"""`burst.preempt_patient` never stops work for a job fair share keeps off on-prem capacity.

A real `szb serve` as in `test_preempt_patient_e2e`: one local A800 at 1 CNY/h, AWS on moto.
sg-lab's patient job runs on the A800. Tenant `strict` may not borrow idle on-prem capacity and
holds no quota there, so its urgent job may only burst: stopping sg-lab's job for it would free
units it may not take (it would wait for them, then burst anyway, the patient work lost).
"""

from __future__ import annotations

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.clouds.test_preempt_patient_e2e import history, job, marks_folder, patient_running, policy
from tests.doubles.moto_front import MotoFront

STRICT = "token-strict-0123456789ab"


def start(start_broker: StartBroker, moto: MotoFront) -> str:
    text = policy("true").replace(
        "tenants:\n",
        "tenants:\n  - {id: strict, kind: partner, entity_country: SG, share: {may_borrow: false}}\n",
    )
    broker = start_broker(
        on_moto.BrokerSetup(
            text,
            tokens={"sg-lab": TOKEN, "strict": STRICT},
            sites={"aws-east": on_moto.aws_on_moto(moto.url)},
            catalogs={"aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a")},
        )
    )
    return broker.address


def test_no_patient_work_is_stopped_for_a_job_that_may_not_borrow(
    moto: MotoFront, start_broker: StartBroker
) -> None:
    marks = marks_folder()
    with grpc.insecure_channel(start(start_broker, moto)) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        patient = patient_running(stub, marks)
        spec = job("urgent", "print('urgent ran')", max_wait_s=60, estimate_s=3600)
        asked = pb.ExplainPlacementRequest(job=spec)
        said = str(stub.ExplainPlacement(asked, metadata=md(STRICT)).explanation)
        assert "stopping patient job" not in said, said
        first = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md(STRICT)).job.id
        try:
            placed = wait_state(
                stub, first, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}, token=STRICT
            )
            assert placed.site == "aws-east", placed.message
            kinds = [e.kind for e in history(stub, patient)]
            assert "preempted" not in kinds, kinds
            assert not list(marks.glob("term-*")), "the patient job was stopped"
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=first), metadata=md(STRICT))
            stub.CancelJob(pb.CancelJobRequest(id=patient), metadata=md())
