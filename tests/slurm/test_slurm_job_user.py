"""Jobs run as the site's unprivileged `user`: a job Slurm could not even launch says why.

The broker (root here) makes its `output_dir` itself; a Slurm job running as `nobody` cannot
open its output file there, so slurmd fails it at launch (JobLaunchFailure, signal 53).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from tests.brokerproc import BrokerProcess, stub_for
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import auth, until_ended, write_onprem_config

pytestmark = pytest.mark.slurm


def slurm_token(cluster: SlurmCluster, user: str) -> str:
    out = subprocess.run(["scontrol", "token", f"username={user}", "lifespan=3600"],
                         env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=30,
                         check=False)
    found = re.search(r"SLURM_JWT=(\S+)", out.stdout)
    if out.returncode != 0 or not found:
        pytest.skip(f"no Slurm token for {user}: {out.stderr.strip()}")
    return found.group(1)


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    token = slurm_token(slurm_cluster, "nobody")
    env = {**slurm_cluster.env, "SZB_SLURM_USER": "nobody", "SZB_SLURM_TOKEN": token}
    config = write_onprem_config(tmp_path / "broker", env, broker_id=f"szb-user-{uuid.uuid4().hex[:8]}")
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def test_a_job_slurm_could_not_launch_says_why_and_has_no_exit_code(broker: BrokerProcess) -> None:
    spec = job_pb2.JobSpec(name="unlaunchable", command=["/bin/sh", "-c", "echo hi"],
                           runtime_estimate=duration_pb2.Duration(seconds=60))
    spec.resources.accelerators.count = 1
    spec.resources.accelerators.any_of.append("A800")
    with stub_for(broker.address) as stub:
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id
        job = until_ended(stub, job_id, time.monotonic() + 60)
    assert job.state == job_pb2.JOB_STATE_FAILED, job.message
    assert not job.HasField("exit_code"), job.exit_code  # it never ran: signal 53 is slurmd's, not its
    output_dir = str(broker.config.parent / "slurm-output")
    assert "JobLaunchFailure" in job.message, job.message
    assert output_dir in job.message and "nobody" in job.message, job.message
