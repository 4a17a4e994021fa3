"""Status, explain and the job RPCs answer while the on-prem Slurm is slow.

The broker's Slurm site is the real test cluster behind a gate (tests/slurm/gate.py) that
holds every byte to and from slurmrestd while a test says so, and the adapter's HTTP
timeout is long (60 s). GetStatus and ExplainPlacement used to ask Slurm for capacity on the
RPC path (GetStatus on the event loop itself, so every RPC waited); now the adapters are
asked in a worker thread and a slow backend leaves its last reading in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster
from tests.slurm.gate import Gate
from tests.slurm.onprem import SITE, auth, write_onprem_config

pytestmark = pytest.mark.slurm

DEADLINE_S = 20.0
"""Far below the adapter's 60 s HTTP timeout: an RPC that waits on the held Slurm misses it."""


@pytest.fixture
def gated(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[tuple[BrokerProcess, Gate]]:
    gate = Gate(slurm_cluster.url)
    env = {**slurm_cluster.env, "SZB_SLURM_URL": gate.url}
    config = write_onprem_config(tmp_path, env, broker_id=f"szb-slow-{uuid.uuid4().hex[:8]}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy.read_text().replace('"timeout_s": 3', '"timeout_s": 60'))
    broker = BrokerProcess(config)
    broker.start()
    try:
        yield broker, gate
    finally:
        gate.release()
        broker.stop()
        gate.close()


def gpu_spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name="probe",
        command=["true"],
        runtime_estimate=duration_pb2.Duration(seconds=600),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A800"])),
    )


def test_status_and_explain_answer_while_slurm_is_held(gated: tuple[BrokerProcess, Gate]) -> None:
    broker, gate = gated
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        before = stub.GetStatus(pb.GetStatusRequest(), metadata=auth(), timeout=DEADLINE_S)
        a800 = [p for p in before.partitions if p.partition == "a800"]
        assert a800 and a800[0].total == 4, before

        gate.hold()
        for _ in range(3):  # past the adapter's one-second cache of Slurm's answers
            status = stub.GetStatus(pb.GetStatusRequest(), metadata=auth(), timeout=DEADLINE_S)
            # The last reading stands in for the held backend: the partitions are still shown.
            assert [p.total for p in status.partitions if p.partition == "a800"] == [4], status
            explained = stub.ExplainPlacement(
                pb.ExplainPlacementRequest(job=gpu_spec()), metadata=auth(), timeout=DEADLINE_S
            )
            assert any(o.site == SITE for o in explained.explanation.offers), explained
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth(), timeout=DEADLINE_S)
        gate.release()
        after = stub.GetStatus(pb.GetStatusRequest(), metadata=auth(), timeout=DEADLINE_S)
        assert [p.total for p in after.partitions if p.partition == "a800"] == [4], after
