"""`szb logs --follow` for a burst job: the real UserData ships the output to the agent endpoint.

The cloud doubles' instances boot by running the UserData the broker gave them (see
`tests.crash.instances`); with each heartbeat (1 s here) the bootstrap posts the job's new
output from the last offset the broker acknowledged.
"""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from broker.api import job_pb2
from tests.brokerproc import ROOT
from tests.crash.client import TERMINAL, Stub, job_spec, submit, wait_state
from tests.crash.conftest import MakeBroker
from tests.crash.instances import Instances
from tests.crash.world import TOKEN
from tests.doubles.ecs_endpoint import EcsCloud
from tests.doubles.moto_front import MotoFront

SCRIPT = "import time\nfor i in range(4):\n    print('cloud line', i, flush=True)\n    time.sleep(1)"


@pytest.mark.parametrize(("site", "accel"), [("aws-east", "A10G"), ("aliyun-bj", "A10")])
def test_logs_follow_a_burst_job_through_its_agent(
    make_broker: MakeBroker,
    moto: MotoFront,
    ecs: EcsCloud,
    tmp_path,
    site: str,
    accel: str,  # type: ignore[no-untyped-def]
) -> None:
    broker = make_broker()
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances"), grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        job = submit(stub, job_spec("cloud-logs", accel, [sys.executable, "-c", SCRIPT]))
        env = {**os.environ, "SZB_SERVER": broker.address, "SZB_TOKEN": TOKEN, "GRPC_VERBOSITY": "ERROR"}
        followed = subprocess.run(
            [sys.executable, "-m", "broker.cli", "logs", job.id, "--follow"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        final = wait_state(stub, job.id, TERMINAL, timeout=60)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.site == site, final.message
        assert followed.returncode == 0, followed.stderr
        assert followed.stdout.splitlines() == [f"cloud line {i}" for i in range(4)], followed.stdout
