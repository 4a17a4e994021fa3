"""Tenants map to Slurm accounts: the broker passes --account (and --qos when mapped) to Slurm.

Issue 14 (Slurm mapping). The test cluster runs without slurmdbd (Debian 12's image has no
slurmdbd or database server installed), so Slurm records the account on the job but computes
no fair-share factor and ignores QOS; what can be checked here is that every job carries its
tenant's account.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptState
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster, Tracker, launch
from tests.slurm.onprem import auth, write_onprem_config

pytestmark = pytest.mark.slurm


def slurm_account(cluster: SlurmCluster, backend_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", backend_id, "-o", "%a"],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if out:
        return out
    # Already ended: the controller still knows it for a while.
    text = subprocess.run(
        ["scontrol", "show", "job", backend_id], env=cluster.env, capture_output=True, text=True, check=True
    ).stdout
    return next(w.split("=", 1)[1] for w in text.split() if w.startswith("Account="))


def test_adapter_passes_the_account(slurm: Tracker) -> None:
    request = launch(("sleep", "30"), gpus=1).model_copy(update={"account": "pku_nlp", "qos": ""})
    backend_id = slurm.submit(request)
    slurm.wait(backend_id, {AttemptState.RUNNING, AttemptState.PENDING})
    assert slurm_account(slurm.cluster, backend_id) == "pku_nlp"


@pytest.fixture(scope="module")
def broker(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("accounts")
    config = write_onprem_config(folder, slurm_cluster.env, broker_id=f"szb-acct-{uuid.uuid4().hex[:8]}")
    policy = folder / "policy.yaml"
    text = policy.read_text()
    old = "  - {id: team-a, kind: university, entity_country: CN}"
    assert old in text
    policy.write_text(
        text.replace(old, "  - {id: team-a, kind: university, entity_country: CN, batch: {account: pku_nlp}}")
    )
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def test_the_broker_charges_each_job_to_its_tenants_slurm_account(
    broker: BrokerProcess, slurm_cluster: SlurmCluster
) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = job_pb2.JobSpec(
            name="acct",
            command=["/bin/sh", "-c", "sleep 20"],
            runtime_estimate=duration_pb2.Duration(seconds=60),
        )
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
        deadline = time.monotonic() + 60
        while (
            stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job.state != job_pb2.JOB_STATE_RUNNING
        ):
            assert time.monotonic() < deadline, "the job did not start at Slurm"
            time.sleep(0.2)
        out = subprocess.run(
            ["squeue", "-h", "-o", "%a %j"], env=slurm_cluster.env, capture_output=True, text=True, check=True
        ).stdout
        mine = [line.split()[0] for line in out.splitlines() if f"szb.{job_id}." in line]
        assert mine == ["pku_nlp"], out
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
