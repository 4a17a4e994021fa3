"""A job sent to Slurm's own queue is still decided as the simulator decides a waiter (issue 15).

The broker's on-prem site is the real Slurm test cluster, its cloud AWS on moto. A job whose
projected start is within its max_wait is sent to Slurm's queue at once ("sent to its queue").
If the job ahead then runs past its estimate, the job is projected late; the simulator, and
the local executor (whose waiters stay in the broker's queue), burst it at its last
responsible moment. Before, the broker never looked at it again: it pended at Slurm past its
deadline until the job ahead ended. Now it is withdrawn from Slurm's queue and bursts.
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
from tests.clouds.test_explain_live import events_so_far
from tests.doubles.moto_front import MotoFront
from tests.job_events import has
from tests.slurm import slurm_moto
from tests.slurm.conftest import SlurmCluster
from tests.slurm.slurm_moto import SITE, TOKEN, submit

pytestmark = pytest.mark.slurm
TAIL = """\
burst:
  wait_model: projected
  sites:
    aws-east: {provisioning_p95: 50s}
"""


@pytest.fixture
def broker(
    slurm_cluster: SlurmCluster,
    moto: MotoFront,  # noqa: F811
    start_broker: StartBroker,  # noqa: F811
    tmp_path: Path,
) -> BrokerProcess:
    text = slurm_moto.policy(slurm_cluster, tmp_path, price_hour=14.0, tail=TAIL, name="burst")
    return slurm_moto.start(start_broker, slurm_cluster, moto, text)


def test_a_job_pending_at_slurm_that_turns_late_bursts_at_its_last_responsible_moment(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    # All four A800s, for a minute by its estimate; it runs on well past that (Slurm's time
    # limit ends it minutes later).
    (tmp_path / "holder.yaml").write_text(
        "name: holder\ncommand: [/bin/sleep, '400']\nruntime_estimate: 60s\nmax_wait: 1d\n"
        "resources:\n  accelerators: {count: 4, any_of: [A800]}\n"
    )
    (tmp_path / "patient.yaml").write_text(
        "name: patient\ncommand: [/bin/true]\nruntime_estimate: 10m\nmax_wait: 100s\n"
        "resources:\n  accelerators: {count: 1, any_of: [A800, A10G]}\n"
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = submit(broker, tmp_path / "holder.yaml")
        patient = ""
        try:
            assert wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN).site == SITE
            patient = submit(broker, tmp_path / "patient.yaml")
            # Projected to start when the holder's minute is up, well within its 100 s: sent to
            # Slurm's queue, where it pends behind the holder.
            sent = wait_state(stub, patient, {job_pb2.JOB_STATE_PROVISIONING}, token=TOKEN)
            assert sent.site == SITE
            # The holder overruns: the patient is projected late, and bursts.
            deadline = time.monotonic() + 120
            while (on_cloud := stub.GetJob(pb.GetJobRequest(id=patient), metadata=md(TOKEN)).job).site != (
                "aws-east"
            ):
                assert on_cloud.state != job_pb2.JOB_STATE_SUCCEEDED, "it ran at Slurm, late"
                assert time.monotonic() < deadline, on_cloud.message
                time.sleep(0.5)
            history = events_so_far(stub, patient, TOKEN, until=has("placed", "on aws-east"))
            kinds = [(e.kind, e.message) for e in history]
            withdrawn = [m for k, m in kinds if k == "requeued"]
            assert withdrawn and f"withdrawn from {SITE}'s queue" in withdrawn[0], kinds
            placed = [m for k, m in kinds if k == "placed"]
            assert "aws-east" in placed[-1] and "[burst]" in placed[-1], kinds
            # The holder still holds the A800s: the patient did not wait for it.
            holding = stub.GetJob(pb.GetJobRequest(id=holder), metadata=md(TOKEN)).job
            assert holding.state == job_pb2.JOB_STATE_RUNNING
        finally:
            for job_id in (holder, patient):
                if job_id:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md(TOKEN))


def test_a_job_projected_late_from_the_start_waits_in_the_broker_then_bursts(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """As on the local executor: never sent to Slurm's queue, it bursts at its last responsible
    moment (80 s of max_wait less the route's 50 s provisioning p95)."""
    (tmp_path / "holder.yaml").write_text(
        "name: holder\ncommand: [/bin/sleep, '400']\nruntime_estimate: 10h\nmax_wait: 1d\n"
        "resources:\n  accelerators: {count: 4, any_of: [A800]}\n"
    )
    (tmp_path / "hurried.yaml").write_text(
        "name: hurried\ncommand: [/bin/true]\nruntime_estimate: 1h\nmax_wait: 80s\n"
        "resources:\n  accelerators: {count: 1, any_of: [A800, A10G]}\n"
    )
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = submit(broker, tmp_path / "holder.yaml")
        hurried = ""
        try:
            assert wait_state(stub, holder, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN).site == SITE
            hurried = submit(broker, tmp_path / "hurried.yaml")
            deadline = time.monotonic() + 120
            while (
                job := stub.GetJob(pb.GetJobRequest(id=hurried), metadata=md(TOKEN)).job
            ).site != "aws-east":
                assert job.site != SITE, "sent to Slurm's queue though projected 10 h late"
                assert time.monotonic() < deadline, job.message
                time.sleep(0.5)
            kinds = [
                (e.kind, e.message, dict(e.data))
                for e in events_so_far(stub, hurried, TOKEN, until=has("placed", "on aws-east"))
            ]
            waiting = [(m, d) for k, m, d in kinds if k == "waiting"]
            assert waiting and "last responsible moment" in waiting[0][0], kinds
            placed = [(m, d) for k, m, d in kinds if k == "placed"]
            assert "[burst]" in placed[-1][0] and placed[-1][1]["onprem_expected_wait_s"] > 9 * 3600, placed
            assert not [k for k, _, _ in kinds if k == "requeued"], kinds  # nothing to withdraw
        finally:
            for job_id in (holder, hurried):
                if job_id:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md(TOKEN))
