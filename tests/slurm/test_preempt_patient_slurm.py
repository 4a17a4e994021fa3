"""`burst.preempt_patient` on real Slurm: a patient job is stopped rather than an urgent one burst.

The broker's on-prem site is the Slurm test cluster (four A800s at 1 CNY/h), its cloud AWS on
moto (7.24 CNY/h). A patient job (max_wait 4 h, ten hours of work) holds all four A800s; an
urgent job (max_wait 60 s) would wait ten hours, so it would burst. Instead the patient job is
preempted (Slurm stops it at its cut time limit, up to minutes later), the urgent job waits for
its units, which stay booked to it, and runs at Slurm; nothing is launched at the cloud.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds.conftest import StartBroker, moto, moto_server, start_broker  # noqa: F401 (fixtures)
from tests.clouds.e2e_helpers import md, wait_state
from tests.clouds.test_broker_bursts import ec2_instances
from tests.doubles.moto_front import MotoFront
from tests.job_events import events_until, has
from tests.slurm import slurm_moto
from tests.slurm.conftest import SlurmCluster
from tests.slurm.slurm_moto import SITE, TOKEN, submit

pytestmark = pytest.mark.slurm
TAIL = """\
burst:
  preempt_patient: {enabled: true}
fair_share:
  reclaim: {grace: 5s}
"""


@pytest.fixture
def broker(
    slurm_cluster: SlurmCluster,
    moto: MotoFront,  # noqa: F811
    start_broker: StartBroker,  # noqa: F811
    tmp_path: Path,
) -> BrokerProcess:
    text = slurm_moto.policy(slurm_cluster, tmp_path, price_hour=1.0, tail=TAIL, name="swap")
    return slurm_moto.start(start_broker, slurm_cluster, moto, text)


def test_a_patient_slurm_job_is_stopped_and_the_urgent_one_runs_there(
    broker: BrokerProcess,
    moto: MotoFront,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "patient.yaml").write_text(
        "name: patient\ncommand: [/bin/sleep, '600']\nruntime_estimate: 10h\nmax_wait: 4h\n"
        "resources:\n  accelerators: {count: 4, any_of: [A800]}\n"
    )
    (tmp_path / "urgent.yaml").write_text(
        "name: urgent\ncommand: [/bin/true]\nruntime_estimate: 1h\nmax_wait: 60s\n"
        "resources:\n  accelerators: {count: 1, any_of: [A800, A10G]}\n"
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        patient = submit(broker, tmp_path / "patient.yaml")
        urgent = ""
        try:
            assert wait_state(stub, patient, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN).site == SITE
            urgent = submit(broker, tmp_path / "urgent.yaml")
            # Slurm stops the patient job at its cut time limit: minutes, not seconds.
            deadline = time.monotonic() + 300
            while (done := stub.GetJob(pb.GetJobRequest(id=urgent), metadata=md(TOKEN)).job).state != (
                job_pb2.JOB_STATE_SUCCEEDED
            ):
                assert done.site != "aws-east", f"it burst: {done.message}"
                assert time.monotonic() < deadline, done.message
                time.sleep(0.5)
            assert done.site == SITE, done.message
            history = events_until(stub, patient, md(TOKEN), has("requeued"))
            kinds = [e.kind for e in history]
            assert "preempted" in kinds and "requeued" in kinds[kinds.index("preempted") :], kinds
            ev = history[kinds.index("preempted")]
            assert ev.data["for_job"] == urgent and "burst.preempt_patient" in ev.message, ev.message
            assert ec2_instances(moto, "us-east-1") == [], "nothing launched at the cloud"
        finally:
            for job_id in (patient, urgent):
                if job_id:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md(TOKEN))
