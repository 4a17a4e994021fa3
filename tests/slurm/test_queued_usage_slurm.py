"""A job pending in Slurm's queue is not charged to its tenant's fair share (szb serve, real Slurm).

Review of #14: a job sent to Slurm's queue (there to wait, running nothing) was booked as running
from the moment it was sent: `szb status` showed its tenant using on-prem capacity and holding
(borrowing) quota units, and the fair order ranked the tenant as if the job ran. Usage and quota
in use now count an on-prem attempt from when it runs; while it pends at the backend it still
counts against its tenant's quota for the order (so no more is sent past the quota meanwhile).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.brokerproc import BrokerProcess, szb
from tests.job_events import events_until, has
from tests.slurm.conftest import SlurmCluster
from tests.slurm.test_reclaim_grace_slurm import POLICY, SITE, TOKENS, broker_folder, spec, until

pytestmark = pytest.mark.slurm

WAITER = "token-waiter-0123456789"
OPERATOR = "token-operator-queued-0123456789"
BORROWER = "  - {{id: borrower, kind: sme, entity_country: CN}}\n"
THREE = POLICY.replace(BORROWER, BORROWER + "  - {{id: waiter, kind: sme, entity_country: CN}}\n")
A800 = f"{SITE}/a800"


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    assert THREE != POLICY
    folder = tmp_path / "broker"
    folder.mkdir()
    config = broker_folder(slurm_cluster, folder, THREE, {**TOKENS, "waiter": WAITER})
    with (folder / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def rows(broker: BrokerProcess) -> dict[str, Any]:
    out = szb(broker, OPERATOR, "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    return {r["tenant"]: r for r in json.loads(out.stdout)["fair_share"]}


def held(row: dict[str, Any] | None) -> int:
    return sum(q["in_use"] for q in row["quotas"]) if row else 0


def test_a_job_pending_in_slurms_queue_uses_nothing_until_it_runs(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    hold = f"trap 'exit 0' TERM; touch {marks}/ready; while true; do sleep 0.2; done"
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        get = lambda job_id, tenant: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md(tenant)).job  # noqa: E731
        full = stub.SubmitJob(pb.SubmitJobRequest(job=spec("full", hold, 4, max_wait_s=10)),
                              metadata=md("borrower")).job.id
        jobs = [(full, "borrower")]
        try:
            until(lambda: get(full, "borrower").state == job_pb2.JOB_STATE_RUNNING, "all four A800s run")
            ask = spec("queued", f"touch {marks}/queued-ran; sleep 120", 2, max_wait_s=86400)
            queued = stub.SubmitJob(pb.SubmitJobRequest(job=ask), metadata=md("waiter")).job.id
            jobs.append((queued, "waiter"))
            told = events_until(stub, queued, md("waiter"), has("attempt", "sent to its queue"))
            assert any("sent to its queue" in e.message for e in told), [(e.kind, e.message) for e in told]
            seen = rows(broker)
            # On main: waiter used 2 of 4 A800s (usage_share 0.25) and borrowed 2 units there.
            assert held(seen.get("waiter")) == 0, seen
            assert seen.get("waiter", {}).get("usage_share", 0) == 0, seen
            assert held(seen["borrower"]) == 4, seen
            # Once it runs, it counts.
            stub.CancelJob(pb.CancelJobRequest(id=full), metadata=md("borrower"))
            until(lambda: (marks / "queued-ran").exists(), "the queued job runs once the A800s are free")
            until(lambda: get(queued, "waiter").state == job_pb2.JOB_STATE_RUNNING, "the broker saw it run")
            until(lambda: held(rows(broker).get("waiter")) == 2, f"it holds 2 units: {rows(broker)}", 30)
            assert rows(broker)["waiter"]["usage_share"] > 0
        finally:
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md(tenant))


def md(tenant: str) -> tuple[tuple[str, str], ...]:
    token = WAITER if tenant == "waiter" else TOKENS[tenant]
    return (("authorization", f"Bearer {token}"),)
