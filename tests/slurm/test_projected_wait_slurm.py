"""The projected wait read live from the real Slurm cluster (`burst.wait_model: projected`).

A broker process whose on-prem site is the Slurm test cluster: a job holding all four A800s
runs at Slurm with a 30-minute estimate; a four-GPU job asked about now is projected to start
when that running job's estimate runs out, and the explanation names the running job's units
and expected end as the source. Once that job pends in Slurm's own queue, the next one has it
ahead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.serde_explain import decision_from_proto
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, auth, write_onprem_config
from tests.slurm.test_broker_on_slurm import TERMINAL, spec

pytestmark = pytest.mark.slurm


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("projected")
    config = write_onprem_config(folder, slurm_cluster.env, broker_id=f"szb-proj-{uuid.uuid4().hex[:8]}")
    policy = folder / "policy.yaml"
    policy.write_text(policy.read_text() + "burst:\n  wait_model: projected\n")
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def test_a_running_slurm_job_is_the_source_of_the_projected_wait(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        holder = stub.SubmitJob(
            pb.SubmitJobRequest(job=spec("holder", "sleep 120", gpus=4, runtime_s=1800)), metadata=auth()
        ).job.id
        queued = [holder]
        try:
            deadline = time.monotonic() + 60
            while (job := stub.GetJob(pb.GetJobRequest(id=holder), metadata=auth()).job).state != (
                job_pb2.JOB_STATE_RUNNING
            ):
                assert job.state not in TERMINAL and time.monotonic() < deadline, job.message
                time.sleep(0.2)
            ask = spec("next", "true", gpus=4, runtime_s=600, max_wait_s=3600)
            answer = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=ask), metadata=auth())
            decision = decision_from_proto(answer.explanation.decision)
            projection = decision["projection"]
            assert projection["partition"] == f"{SITE}/a800", projection
            assert projection["free_units"] == 0 and projection["running_jobs"] >= 1
            units, ends_in = projection["running"][0]["units"], projection["running"][0]["ends_in_s"]
            assert units == 4 and 25 * 60 <= ends_in <= 30 * 60, projection  # the holder's estimate
            assert projection["wait_s"] == pytest.approx(ends_in, abs=5)
            assert decision["onprem_expected_wait_s"] == pytest.approx(ends_in, abs=5)
            # Slurm queues jobs itself: a job projected to start within its max_wait is sent there.
            assert decision["action"] == "run" and not decision["burst"], decision
            assert "sent to its queue" in decision["reasons"][0], decision
            # Sent there, it pends in Slurm's own queue behind the holder: the next job has it
            # ahead, its 10-minute estimate after the holder's end.
            queued.append(stub.SubmitJob(pb.SubmitJobRequest(job=ask), metadata=auth()).job.id)
            deadline = time.monotonic() + 30
            while True:
                answer = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=ask), metadata=auth())
                later = decision_from_proto(answer.explanation.decision)
                if later["projection"]["backend_queue_jobs"] == 1:
                    break
                assert time.monotonic() < deadline, later
                time.sleep(0.3)
            assert later["projection"]["wait_s"] == pytest.approx(ends_in + 600, abs=30), later
            # While it pends at Slurm, its message (`szb list`'s REASON) says why it was sent there.
            pending = stub.GetJob(pb.GetJobRequest(id=queued[-1]), metadata=auth()).job
            assert pending.state == job_pb2.JOB_STATE_PROVISIONING, pending
            assert pending.message.startswith(f"attempt 1 on {SITE}: {SITE} expects a wait of "), pending
            assert pending.message.endswith("sent to its queue"), pending.message
        finally:
            for job_id in queued:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
            deadline = time.monotonic() + 30
            while any(
                stub.GetJob(pb.GetJobRequest(id=j), metadata=auth()).job.state not in TERMINAL for j in queued
            ):
                assert time.monotonic() < deadline
                time.sleep(0.2)
