"""A node of a running 2-node gang goes down in Slurm: the broker counts the whole gang's attempt
lost and runs the gang again, once, when both nodes take jobs again (never a second copy)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.slurm import SlurmAdapter
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import SiteId
from tests.brokerproc import BrokerProcess
from tests.job_events import events_so_far
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, auth, until_ended, write_onprem_config

pytestmark = pytest.mark.slurm


def _scontrol(cluster: SlurmCluster, *args: str) -> None:
    subprocess.run(["scontrol", *args], env={**os.environ, **cluster.env}, capture_output=True,
                   timeout=30, check=False)


def test_a_node_failing_under_a_running_gang_reruns_the_gang_once(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    slurm_cluster.wait_usable()
    broker_id = f"szb-gangfail-{uuid.uuid4().hex[:8]}"
    proc = BrokerProcess(write_onprem_config(tmp_path, slurm_cluster.env, broker_id=broker_id))
    slurm = SlurmAdapter(SiteId(SITE), {"url": slurm_cluster.url, "token": slurm_cluster.token,
                                        "user": slurm_cluster.user, "broker_id": broker_id,
                                        "partitions": {"ascend": "Ascend910B", "a800": "A800", "cpu": None}})
    script = 'case "$SZB_ATTEMPT_ID" in *-a1) echo "first $RANK"; sleep 600;; esac; echo "again $RANK"'
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = job_pb2.JobSpec(name="gang-node-fail", command=["/bin/sh", "-c", script],
                                  runtime_estimate=duration_pb2.Duration(seconds=900))
            job.resources.nodes = 2
            job.resources.cpus = 1
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth()).job.id
            deadline = time.monotonic() + 60
            running = job_pb2.JOB_STATE_RUNNING
            while stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job.state != running:
                assert time.monotonic() < deadline, "the gang never ran"
                time.sleep(0.2)
            try:
                _scontrol(slurm_cluster, "update", "nodename=szb-ascend", "state=down",
                          "reason=szb-gang-fail")
                deadline = time.monotonic() + 120
                while not any(e.kind == "lost" for e in events_so_far(stub, job_id, auth())):
                    assert time.monotonic() < deadline, f"no lost attempt: {slurm.list_owned()}"
                    time.sleep(0.5)
                time.sleep(5)  # the gang cannot run again on one node meanwhile
                live = [o for o in slurm.list_owned() if o.job_id == job_id and not o.state.terminal]
                assert len(live) <= 1, live
            finally:
                _scontrol(slurm_cluster, "update", "nodename=szb-ascend", "state=resume")
                slurm_cluster.wait_usable()
            got = until_ended(stub, job_id, time.monotonic() + 120)
    finally:
        proc.stop()
        for inst in slurm.list_owned():
            slurm.cancel(inst.backend_id, inst.token or "")
    assert got.state == job_pb2.JOB_STATE_SUCCEEDED, got.message
    assert got.attempts == 2, got
    assert "again 0" in got.log_tail or "again" in got.log_tail, got.log_tail
