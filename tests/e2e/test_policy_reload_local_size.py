"""A reload that shrinks a local partition reaches the local executor without a restart.

The a800 partition of the e2e policy has 4 GPUs; a 2-GPU job runs, then a reload makes the
partition 2 GPUs. `szb status` must say 2 at once, the running job keeps running, and a second
2-GPU job waits for it (the executor used to start it: its inventory was the one it started with).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.e2e.test_policy_reload import policy_hash, wait_hash
from tests.ha.cloud import wait_until

SLEEP = [PY, "-c", "import time; time.sleep(600)"]


def a800(stub: broker_service_pb2_grpc.BrokerServiceStub) -> pb.PartitionStatus:
    answer = stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a"))
    return next(p for p in answer.partitions if p.partition == "a800")


def test_a_reload_shrinking_a_local_partition_is_applied_at_once(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    jobs: list[str] = []
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            jobs.append(submit(stub, spec("first", SLEEP, gpus=2)).job.id)
            wait_for(stub, jobs[0], {job_pb2.JOB_STATE_RUNNING})
            assert a800(stub).total == 4

            old = policy_hash(stub)
            (tmp_path / "policy.yaml").write_text(POLICY.replace("count_per_node: 4", "count_per_node: 2"))
            wait_hash(stub, old)
            wait_until("szb status shows the reloaded size", lambda: a800(stub).total == 2)
            assert a800(stub).free == 0

            jobs.append(submit(stub, spec("second", SLEEP, gpus=2)).job.id)

            def said() -> str:
                got = stub.GetJob(pb.GetJobRequest(id=jobs[1]), metadata=auth("team-a")).job
                assert got.state == job_pb2.JOB_STATE_QUEUED, "the executor started more than the new size"
                return got.pending_reason

            wait_until("the second job says why it waits", said)
            first = stub.GetJob(pb.GetJobRequest(id=jobs[0]), metadata=auth("team-a")).job
            assert first.state == job_pb2.JOB_STATE_RUNNING  # running work keeps running

            stub.CancelJob(pb.CancelJobRequest(id=jobs[0]), metadata=auth("team-a"))
            wait_for(stub, jobs[1], {job_pb2.JOB_STATE_RUNNING}, timeout=60)
    finally:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for job_id in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("team-a"))
            for job_id in jobs:
                wait_for(stub, job_id, TERMINAL, timeout=60)
        broker.stop()
