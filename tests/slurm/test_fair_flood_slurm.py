"""A flooding tenant does not delay a small tenant's job beyond one job's runtime on the real Slurm
cluster (issue 14). Slurm's queue is first come, first served: the flood's twenty pending jobs
held the small tenant's one behind them for five rounds (`broker.dispatch.withdraw_fair`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_reclaim_grace_slurm import broker_folder, spec

pytestmark = pytest.mark.slurm

TOKENS = {"flood": "token-flood-0123456789", "small": "token-small-0123456789",
          "other": "token-other-0123456789"}
POLICY = """\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: {site}
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: a800, accelerator: A800, count_per_node: 4, price_hour: 14.0, cpus_per_node: 16}}
    adapter_config: {adapter_config}
tenants:
  - {{id: flood, kind: sme, entity_country: CN}}
  - {{id: small, kind: university, entity_country: CN}}
  - {{id: other, kind: university, entity_country: CN}}
fair_share: {{half_life: 1h}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""
JOB_S = 20


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    folder = tmp_path / "broker"
    folder.mkdir()
    proc = BrokerProcess(broker_folder(slurm_cluster, folder, POLICY, TOKENS))
    proc.start()
    yield proc
    proc.stop()


def test_a_flooding_tenant_does_not_delay_a_small_tenants_job_beyond_one_runtime(
    broker: BrokerProcess,
) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        flood = [pb.SubmitJobRequest(job=spec(f"f{i}", f"sleep {JOB_S}", 1, max_wait_s=7200))
                 for i in range(24)]
        sent = stub.SubmitJobs(pb.SubmitJobsRequest(requests=flood), metadata=auth("flood")).responses
        flood_ids = [r.job.id for r in sent]
        try:
            deadline = time.monotonic() + 60
            while sum(stub.GetJob(pb.GetJobRequest(id=i), metadata=auth("flood")).job.state
                      == job_pb2.JOB_STATE_RUNNING for i in flood_ids) < 4:
                assert time.monotonic() < deadline, "the flood never filled the four A800s"
                time.sleep(0.2)
            submitted = time.monotonic()
            small = stub.SubmitJob(pb.SubmitJobRequest(job=spec("small", "sleep 1", 1, max_wait_s=7200)),
                                   metadata=auth("small")).job.id
            while (got := stub.GetJob(pb.GetJobRequest(id=small), metadata=auth("small")).job).state not in (
                job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED
            ):
                assert time.monotonic() - submitted < 6 * JOB_S, got.message
                time.sleep(0.2)
            waited = time.monotonic() - submitted
        finally:
            for i in flood_ids:
                stub.CancelJob(pb.CancelJobRequest(id=i), metadata=auth("flood"))
    # One flood job's runtime, plus the broker's and Slurm's scheduling turns (a few seconds).
    assert waited <= JOB_S + 8, f"the small tenant's job started {waited:.0f} s after its submission"
    assert got.state != job_pb2.JOB_STATE_FAILED, got.message


def test_two_tenants_waiting_behind_a_third_are_not_moved_back_and_forth(broker: BrokerProcess) -> None:
    """Review of the first version: with `flood` holding every A800, `small`'s and `other`'s one
    job each (both idle tenants) withdrew each other's in turn, every 2 s, for as long as they
    waited. Neither tenant runs anything there, so neither is ahead of the other."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = stub.SubmitJob(pb.SubmitJobRequest(job=spec("all", "sleep 60", 4, max_wait_s=7200)),
                                metadata=auth("flood")).job.id
        jobs = [(holder, "flood")]
        try:
            deadline = time.monotonic() + 60
            while stub.GetJob(pb.GetJobRequest(id=holder), metadata=auth("flood")).job.state != (
                job_pb2.JOB_STATE_RUNNING
            ):
                assert time.monotonic() < deadline, "the flood's job never ran"
                time.sleep(0.2)
            for tenant in ("small", "other"):
                job = spec(tenant, "sleep 1", 1, max_wait_s=7200)
                sent = stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth(tenant)).job
                jobs.append((sent.id, tenant))
                time.sleep(3)
            time.sleep(15)  # (the first version had moved them 7 times by now)
            for job_id, tenant in jobs[1:]:
                got = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job
                assert got.attempts == 1, f"{tenant}'s job was withdrawn: {got.message}"
        finally:
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
