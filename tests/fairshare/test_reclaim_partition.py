"""Reclaim frees only the quota a tenant holds: never borrowed work on a partition it has no quota on.

A real `szb serve` on the local executor with two partitions a job may use: the owner's quota
is on the A800 one; the borrower runs on the cheaper H800 one, which nobody is guaranteed.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from broker.store import SqliteStore
from tests.brokerproc import JOB_PYTHON, ROOT, BrokerProcess
from tests.fairshare.test_reclaim_e2e import TOKENS, auth, get, until
from tests.local_policy import local_policy

POLICY = local_policy(
    "  - {id: owner, kind: institute, entity_country: CN, share: {quota: {local/owned: 2}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN}\n",
    "{name: owned, accelerator: A800, count_per_node: 2, price_hour: 14.0}",
    "{name: spare, accelerator: H800, count_per_node: 2, price_hour: 10.0}",
    rest="fair_share:\n  reclaim: {grace: 5s, max_capacity_share: 0.5, window: 10m}\n",
)


def job(name: str, seconds: float) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"],
        runtime_estimate=duration_pb2.Duration(seconds=600),
    )
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.extend(["A800", "H800"])
    return msg


def partitions(folder: Path, job_id: str) -> list[tuple[str, str]]:
    store = SqliteStore(folder / "data" / "broker.db")
    try:
        return [(a.offer.partition or "", a.state.value) for a in store.attempts_for(job_id)]  # type: ignore[arg-type]
    finally:
        store.close()


def test_no_reclaim_on_a_partition_the_owner_has_no_quota_on(tmp_path: Path) -> None:
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "configs" / name, tmp_path / name)
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
    )
    (tmp_path / "broker.yaml").write_text(
        textwrap.dedent("""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {poll_interval_s: 0.2}
        """)
    )
    broker = BrokerProcess(tmp_path / "broker.yaml")
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            borrowed = [
                stub.SubmitJob(pb.SubmitJobRequest(job=job(f"b{i}", 120)), metadata=auth("borrower")).job.id
                for i in range(2)
            ]
            until(
                lambda: all(get(stub, j, "borrower").state == job_pb2.JOB_STATE_RUNNING for j in borrowed),
                "the borrower fills the cheaper partition",
            )
            assert [partitions(tmp_path, j) for j in borrowed] == [[("local/spare", "RUNNING")]] * 2
            # The owner's job is within its quota (on local/owned, idle) and waits for the cheaper
            # local/spare: nothing there is the owner's to take back.
            mine = stub.SubmitJob(pb.SubmitJobRequest(job=job("mine", 0)), metadata=auth("owner")).job.id
            until(
                lambda: (
                    "within its quota" in get(stub, mine, "owner").message
                    or get(stub, mine, "owner").state != job_pb2.JOB_STATE_QUEUED
                ),
                "the owner's job decided",
            )
            said = get(stub, mine, "owner").message
            assert "reclaiming" not in said, said
            for j in borrowed:
                assert partitions(tmp_path, j) == [("local/spare", "RUNNING")], "borrowed work preempted"
            for j in borrowed:
                stub.CancelJob(pb.CancelJobRequest(id=j), metadata=auth("borrower"))
            stub.CancelJob(pb.CancelJobRequest(id=mine), metadata=auth("owner"))
    finally:
        broker.stop()
