"""A tenant that may not borrow, beyond its quota, bursts when its max_wait says so (issue 14).

A real `szb serve`: a local A800 partition and AWS on moto. The tenant `nb` is guaranteed one
of the four A800s and may not borrow the idle rest; its second job may not start on-prem, so
it must not wait there for ever while a cloud offer is allowed and its max_wait is spent.
"""

from __future__ import annotations

import time

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.doubles.moto_front import MotoFront

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800.replace("count_per_node: 1", "count_per_node: 4")
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + """\
tenants:
  - {id: nb, kind: partner, entity_country: SG, share: {quota: {onprem/a800: 1}, may_borrow: false}}
"""
    + on_moto.CN_RESIDENCY
)


def job(name: str, seconds: float, max_wait_s: int) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"],
        runtime_estimate=duration_pb2.Duration(seconds=3600),
        max_wait=duration_pb2.Duration(seconds=max_wait_s),
    )
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.extend(["A800", "A10G"])
    return msg


def get(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> job_pb2.Job:
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job


def test_a_job_beyond_a_no_borrow_quota_bursts_at_its_max_wait(
    moto: MotoFront, start_broker: StartBroker
) -> None:
    broker = start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"nb": TOKEN},
            sites={"aws-east": on_moto.aws_on_moto(moto.url)},
            catalogs={
                "aws-east.csv": on_moto.catalog(
                    "g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a",
                    "g5.12xlarge,A10G,2,48,192,5.672,,us-east-1,us-east-1a",
                ),
            },
        )
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        first = stub.SubmitJob(pb.SubmitJobRequest(job=job("mine", 300, 0)), metadata=md()).job.id
        running = wait_state(stub, first, {job_pb2.JOB_STATE_RUNNING})
        assert running.site == "onprem"  # its quota's one A800
        # Its quota is in use and it may not borrow the three idle A800s: on-prem it would wait
        # for its first job's hour; it may not wait at all, so it bursts.
        second = stub.SubmitJob(pb.SubmitJobRequest(job=job("more", 0, 0)), metadata=md()).job.id
        placed = wait_state(
            stub, second, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING}, timeout=30
        )
        assert placed.site == "aws-east", placed.message
        # One that may wait a day waits for its quota: the first job's hour, not idle capacity.
        patient = stub.SubmitJob(pb.SubmitJobRequest(job=job("later", 0, 86400)), metadata=md()).job.id
        deadline = time.monotonic() + 30
        while "expected wait 60 min" not in (said := get(stub, patient).message):
            assert time.monotonic() < deadline, said
            time.sleep(0.1)
        assert get(stub, patient).state == job_pb2.JOB_STATE_QUEUED
        # Two A800s never fit in its quota of one: it bursts by its max_wait, however long.
        wide = job("wide", 0, 86400)
        wide.resources.accelerators.count = 2
        big = stub.SubmitJob(pb.SubmitJobRequest(job=wide), metadata=md()).job.id
        deadline = time.monotonic() + 30
        while "bursting to aws-east at the last responsible moment" not in (said := get(stub, big).message):
            assert time.monotonic() < deadline, said
            time.sleep(0.1)
        for j in (first, second, patient, big):
            stub.CancelJob(pb.CancelJobRequest(id=j), metadata=md())
