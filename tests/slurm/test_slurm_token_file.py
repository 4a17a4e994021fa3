"""The Slurm JWT read from a file (`token_from_file`, as the container setup has it) is read
again when it has expired: a rotated file brings the site back without restarting the broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, auth, write_onprem_config

pytestmark = pytest.mark.slurm


def _token(cluster: SlurmCluster, lifespan_s: int) -> str:
    out = subprocess.run(["scontrol", "token", f"username={cluster.user}", f"lifespan={lifespan_s}"],
                         env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=30,
                         check=False)
    found = re.search(r"SLURM_JWT=(\S+)", out.stdout)
    if out.returncode != 0 or not found:
        pytest.skip(f"cannot make a Slurm token: {out.stderr.strip()}")
    return found.group(1)


@pytest.mark.parametrize("at_start", ["expired", "empty", "missing"])
def test_an_expired_or_empty_token_file_is_read_again_once_rotated(
    slurm_cluster: SlurmCluster, tmp_path: Path, at_start: str
) -> None:
    """`empty`: the deployment recipe touches the file and fills it later; an empty file made the
    client mint tokens with scontrol for good (none in a container) and never read it again.
    `missing`: a secret mounted after the start left the site out until a restart; now until
    the file is there and the broker is sent SIGHUP."""
    folder = tmp_path / "broker"
    config = write_onprem_config(folder, slurm_cluster.env, broker_id=f"szb-jwt-{uuid.uuid4().hex[:8]}")
    token_file = folder / "slurm_jwt"
    if at_start == "empty":
        token_file.write_text("")
    elif at_start == "expired":
        token_file.write_text(_token(slurm_cluster, 1) + "\n")
        time.sleep(2)  # the token in the file has expired when the broker starts
    text = config.read_text()
    from_file = "{token_from_file: " + json.dumps(str(token_file)) + "}"
    config.write_text(re.sub(r"\{token: .*\}", from_file, text))
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            deadline = time.monotonic() + 30
            while SITE not in (sick := stub.GetStatus(pb.GetStatusRequest(), metadata=auth()).unhealthy_sites):  # noqa: E501
                assert time.monotonic() < deadline, f"the {at_start} token file never made the site unhealthy"
                time.sleep(0.2)
            if at_start == "empty":  # (not scontrol's tokens: the file is the site's token)
                assert broker.said("holds no token yet"), sick[SITE]
            if at_start == "missing":
                assert broker.said(f"site {SITE} disabled until its secret can be read"), sick[SITE]
            spec = job_pb2.JobSpec(name="after-rotation", command=["/bin/sh", "-c", "echo rotated"],
                                   runtime_estimate=duration_pb2.Duration(seconds=60))
            spec.resources.accelerators.count = 1
            spec.resources.accelerators.any_of.append("A800")
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
            token_file.write_text(_token(slurm_cluster, 3600) + "\n")  # the operator rotates it
            if at_start == "missing":  # (a file that was never there is read at a reload)
                assert broker.proc is not None
                broker.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while (job := stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job).state in (
                job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_PLACING, job_pb2.JOB_STATE_PROVISIONING,
                job_pb2.JOB_STATE_RUNNING,
            ):
                assert time.monotonic() < deadline, job.message
                time.sleep(0.2)
            assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
            assert "rotated" in job.log_tail
    finally:
        broker.stop()
