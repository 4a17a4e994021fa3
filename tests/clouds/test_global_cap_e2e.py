"""The global burst cap taken mid-pass by another tenant, through a real `szb serve` bursting to
Alibaba on the ECS double (found by a held-out review of issue 6): the later job is decided on the
cap as it now is (no refused attempt), and its message says the cap is reached without figures."""

from __future__ import annotations

import re
import signal
import time

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import JobId
from broker.store import SqliteStore
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import md
from tests.clouds.ecs_a10 import a10_catalog, ecs
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

__all__ = ["ecs"]  # fixtures
TOKENS = {"aa": "tok-aa-0123456789", "bb": "tok-bb-0123456789", "cc": "tok-cc-0123456789"}


def policy(enabled: bool) -> str:
    """On-prem A800 and Alibaba A10; a global cap (8 CNY) room for one 5 CNY burst, no budgets."""
    return (
        on_moto.POLICY_HEAD
        + on_moto.ONPREM_A800
        + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
        + "tenants:\n"
        + "".join(f"  - {{id: {t}, kind: sme, entity_country: CN}}\n" for t in TOKENS)
        + f"""\
burst:
  enabled: {str(enabled).lower()}
  heartbeat_timeout: 1h
  give_up_after: 30s
  budget: {{global_monthly_cap: 8}}
"""
        + on_moto.CN_RESIDENCY
    )


def spec(name: str, runtime_s: int, accels: list[str]) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name, command=["python3", "-c", "import time; time.sleep(600)"],
        runtime_estimate=duration_pb2.Duration(seconds=runtime_s), max_wait=duration_pb2.Duration(seconds=0),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=accels)),
    )  # fmt: skip


def test_the_cap_another_tenant_took_in_the_same_pass_makes_no_attempt(
    ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker
) -> None:
    broker = start_broker(on_moto.BrokerSetup(
        policy(False), tokens=TOKENS,
        sites={"ali-bj": on_moto.ecs_double(ecs_server.address)}, catalogs=a10_catalog(3600.0)))  # fmt: skip
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def submit(name: str, tenant: str, runtime_s: int, accels: list[str]) -> str:
            req = pb.SubmitJobRequest(job=spec(name, runtime_s, accels))
            return str(stub.SubmitJob(req, metadata=md(TOKENS[tenant])).job.id)

        def job(job_id: str, tenant: str) -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md(TOKENS[tenant])).job

        filler = submit("filler", "cc", 3600, ["A800"])  # the on-prem A800 is taken
        deadline = time.monotonic() + 30
        while job(filler, "cc").state != job_pb2.JOB_STATE_RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # aa's first job (on-prem only) puts aa's money in the pass's cache before bb bursts.
        a1 = submit("a-onprem-only", "aa", 5, ["A800"])
        time.sleep(0.3)  # (the queue's order is aa's, bb's, aa's: by share, tenant, submission)
        b1 = submit("b-urgent", "bb", 5, ["A800", "A10"])
        time.sleep(0.3)
        a2 = submit("a-urgent", "aa", 5, ["A800", "A10"])
        time.sleep(1.0)
        old = stub.GetStatus(pb.GetStatusRequest(), metadata=md(TOKENS["cc"])).policy_hash
        (broker.config.parent / "policy.yaml").write_text(policy(True))  # all three in one pass
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while stub.GetStatus(pb.GetStatusRequest(), metadata=md(TOKENS["cc"])).policy_hash == old:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        deadline = time.monotonic() + 15
        while job(b1, "bb").state not in (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING):
            assert time.monotonic() < deadline, job(b1, "bb")
            time.sleep(0.2)
        time.sleep(2)
        waiting = job(a2, "aa")
        store = SqliteStore(broker.config.parent / "data" / "broker.db")
        try:
            attempts = store.attempts_for(JobId(a2))
        finally:
            store.close()
        for j, tenant in ((a2, "aa"), (b1, "bb"), (a1, "aa"), (filler, "cc")):
            stub.CancelJob(pb.CancelJobRequest(id=j), metadata=md(TOKENS[tenant]))
        deadline = time.monotonic() + 15  # (their local runs end before the broker does)
        while any(job(j, t).state != job_pb2.JOB_STATE_CANCELLED for j, t in ((a1, "aa"), (filler, "cc"))):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert attempts == [], "a burst the global cap refuses makes no attempt"
    assert waiting.state == job_pb2.JOB_STATE_QUEUED, waiting
    assert "global burst cap" in waiting.message, waiting.message
    assert not re.search(r"\d+\.\d\d", waiting.message), "a tenant is not told what is left of the cap"
