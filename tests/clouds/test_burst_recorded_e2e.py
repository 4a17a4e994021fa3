"""A burst says why, after it happened: the placed event, the audit trail and `szb get` (issue #6).

On-prem is the local executor with one A800, held by a long job; the cloud is the Alibaba ECS
double (ali-bj, A10). An impatient job bursts; the operator reads why from the real CLI.
"""

from __future__ import annotations

import json

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import Regions, StartBroker
from tests.clouds.e2e_helpers import TOKEN, md, wait_state
from tests.clouds.test_bursting_e2e import spec
from tests.clouds.test_explain_live import events_so_far
from tests.doubles.ecs_endpoint import EcsEndpoint
from tests.job_events import has

OPERATOR = "token-op-00000000000000"

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY")
    + """\
tenants:
  - {id: lab, kind: partner, entity_country: SG, monthly_budget: 500}
burst:
  sites:
    ali-bj: {provisioning_p95: 5s}
  heartbeat_timeout: 1h
"""
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def broker(ecs_server: EcsEndpoint, regions: Regions, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"lab": TOKEN},
            operators={"lab": OPERATOR},
            sites={"ali-bj": on_moto.ecs_double(ecs_server.address)},
            catalogs={
                "ali-bj.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,13.90,4.00,cn-beijing,cn-beijing-i")
            },
            dispatch="poll_interval_s: 0.2",
        )
    )


def test_a_burst_records_its_reasons_where_operators_look(broker: BrokerProcess) -> None:
    """The placed event keeps the decision's reasons (data and message, so `szb watch` and
    `szb audit --job` say why), and `szb get` of the running burst still says why it burst."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = stub.SubmitJob(
            pb.SubmitJobRequest(job=spec("holder", ["A800"], max_wait_s=0, seconds=120)), metadata=md()
        ).job.id
        jobs = [holder]
        try:
            wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING})
            job_id = stub.SubmitJob(
                pb.SubmitJobRequest(job=spec("impatient", ["A800", "A10"], max_wait_s=0, seconds=120)),
                metadata=md(),
            ).job.id
            jobs.append(job_id)
            running = wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING}, timeout=90)
            assert running.site == "ali-bj", running.message
            history = events_so_far(stub, job_id, TOKEN, until=has("placed"))
            [placed] = [e for e in history if e.kind == "placed"]
            assert "reasons" in placed.data, placed.message
            reasons = list(placed.data["reasons"])
            assert reasons and reasons[0].startswith("burst: "), placed.data
            assert placed.data["burst"] is True, placed.data
            assert placed.message.endswith(f"[burst]: {'; '.join(reasons)}"), placed.message

            audit = szb(broker, OPERATOR, "audit", "--job", job_id, "-o", "json")
            assert audit.returncode == 0, audit.stderr
            [said] = [e["message"] for e in json.loads(audit.stdout)["events"] if e["kind"] == "placed"]
            assert reasons[0] in said, said

            got = szb(broker, TOKEN, "get", job_id, "-o", "json")
            assert got.returncode == 0, got.stderr
            message = json.loads(got.stdout)["message"]
            assert message == f"running on ali-bj [burst]: {'; '.join(reasons)}", message
        finally:
            for jid in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md())


def test_a_waiting_job_bursts_at_its_last_responsible_moment_not_at_the_next_scan(
    broker: BrokerProcess,
) -> None:
    """Review: with a 20 s max_wait and a 5 s provisioning p95 the job was due to burst at 15 s,
    but nothing woke the dispatcher then: it burst at the next full scan (every 15 s), 28 s in,
    past its max_wait."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = stub.SubmitJob(
            pb.SubmitJobRequest(job=spec("holder", ["A800"], max_wait_s=0, seconds=120)), metadata=md()
        ).job.id
        jobs = [holder]
        try:
            wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING})
            job_id = stub.SubmitJob(
                pb.SubmitJobRequest(job=spec("waits", ["A800", "A10"], max_wait_s=20, seconds=120)),
                metadata=md(),
            ).job.id
            jobs.append(job_id)
            history = events_so_far(stub, job_id, TOKEN, until=has("placed"))
            [placed] = [e for e in history if e.kind == "placed"]
            assert placed.data["burst"] is True, placed.message
            assert placed.data["waited_s"] <= 20, placed.data  # (its last responsible moment: 15 s)
        finally:
            for jid in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=jid), metadata=md())
