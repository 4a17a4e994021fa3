"""An owner's job that could run on its quota's partition or on a cheaper one nobody is
guaranteed, both full of borrowed work: it takes its quota back on its own partition."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from tests.brokerproc import ROOT, BrokerProcess
from tests.fairshare.test_reclaim_e2e import TOKENS, auth, get, until
from tests.fairshare.test_reclaim_partition import POLICY, job, partitions


def _serve(folder: Path) -> BrokerProcess:
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "configs" / name, folder / name)
    (folder / "policy.yaml").write_text(POLICY)
    (folder / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
    )
    (folder / "broker.yaml").write_text(textwrap.dedent("""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {poll_interval_s: 0.2}
        """))
    return BrokerProcess(folder / "broker.yaml")


def only(spec: job_pb2.JobSpec, accelerator: str) -> job_pb2.JobSpec:
    del spec.resources.accelerators.any_of[:]
    spec.resources.accelerators.any_of.append(accelerator)
    return spec


def test_an_owner_reclaims_its_quota_when_the_cheaper_partition_is_full_too(tmp_path: Path) -> None:
    broker = _serve(tmp_path)
    broker.start()
    borrowed: list[str] = []
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            borrowed += [
                stub.SubmitJob(pb.SubmitJobRequest(job=only(job(f"b{i}", 300), accel)),
                               metadata=auth("borrower")).job.id
                for i, accel in enumerate(("A800", "A800", "H800", "H800"))
            ]
            until(lambda: all(get(stub, j, "borrower").state == job_pb2.JOB_STATE_RUNNING for j in borrowed),
                  "the borrower fills both partitions")
            mine = stub.SubmitJob(pb.SubmitJobRequest(job=job("mine", 0)), metadata=auth("owner")).job.id
            until(lambda: get(stub, mine, "owner").state == job_pb2.JOB_STATE_SUCCEEDED,
                  f"the owner's job runs on its quota: {get(stub, mine, 'owner').message}", timeout=90)
            assert partitions(tmp_path, mine)[-1][0] == "local/owned"
    finally:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for j in borrowed:
                stub.CancelJob(pb.CancelJobRequest(id=j), metadata=auth("borrower"))
            for j in borrowed:
                until(lambda j=j: get(stub, j, "borrower").state == job_pb2.JOB_STATE_CANCELLED, "cancelled")
        broker.stop()
