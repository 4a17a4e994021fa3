"""`szb logs --follow` for a burst job: the real UserData ships the output to the agent endpoint.

The cloud doubles' instances boot by running the UserData the broker gave them (see
`tests.crash.instances`); with each heartbeat (1 s here) the bootstrap posts the job's new
output from the last offset the broker acknowledged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

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


def logs_of(broker_address: str, job_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SZB_SERVER": broker_address, "SZB_TOKEN": TOKEN, "GRPC_VERBOSITY": "ERROR"}
    return subprocess.run([sys.executable, "-m", "broker.cli", "logs", job_id], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


# 3,000 numbered lines of 60 characters: 183 KB, more than one shipment.
BIG = "for i in range(3000):\n    print(f'{i:06d} ' + 'x' * 53)"


def test_output_larger_than_one_shipment_reaches_szb_logs(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Held-out review: a chunk of 256 KiB is 350 KB as base64 in JSON, over the endpoint's 64 KiB:
    every shipment was refused (413), and `szb logs` printed nothing, for good."""
    broker = make_broker()
    broker.start()
    with Instances(moto, ecs, tmp_path / "instances"), grpc.insecure_channel(broker.address) as channel:
        stub = Stub(channel)
        job = submit(stub, job_spec("big-logs", "A10G", [sys.executable, "-c", BIG]))
        final = wait_state(stub, job.id, TERMINAL, timeout=90)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
        lines = logs_of(broker.address, job.id).stdout.splitlines()
        assert len(lines) == 3000 and lines[0].startswith("000000 ") and lines[-1].startswith("002999 "), (
            len(lines), lines[:2])


def test_output_of_a_job_that_ended_while_the_broker_was_down_reaches_szb_logs(
    make_broker: MakeBroker, moto: MotoFront, ecs: EcsCloud, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Held-out review: the bootstrap shipped the log once, before its first exit report; the
    restarted broker took the result and ended the instance, and the rest of the output with it."""
    broker = make_broker()
    broker.start()
    marks = tmp_path / "marks"
    marks.mkdir()
    code = (f"import time, pathlib\nprint('FIRST-LINE', flush=True)\n"
            f"pathlib.Path({str(marks)!r}, 'up').touch()\n"
            f"while not pathlib.Path({str(marks)!r}, 'go').exists():\n    time.sleep(0.1)\n"
            "for i in range(500):\n    print('later', i)\nprint('LAST-LINE')")
    with Instances(moto, ecs, tmp_path / "instances"):
        with grpc.insecure_channel(broker.address) as channel:
            job = submit(Stub(channel), job_spec("down-logs", "A10G", [sys.executable, "-c", code]))
        deadline = time.monotonic() + 90
        while not (marks / "up").exists():
            assert time.monotonic() < deadline, "the instance never ran the job"
            time.sleep(0.1)
        broker.kill()
        (marks / "go").touch()
        time.sleep(4.0)  # it ends and knocks on a closed door
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            final = wait_state(Stub(channel), job.id, TERMINAL, timeout=90)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
        lines = logs_of(broker.address, job.id).stdout.splitlines()
        assert lines[0] == "FIRST-LINE" and lines[-1] == "LAST-LINE", (len(lines), lines[-3:])
        assert len(lines) == 502, len(lines)


def test_a_shipment_of_a_whole_chunk_fits_the_endpoints_body_limit() -> None:
    import base64
    import json

    from adapters.bootstrap import _REPORT_PY, LOG_CHUNK_BYTES
    from broker.agent_http import MAX_BODY

    assert f"f.read({LOG_CHUNK_BYTES})" in _REPORT_PY  # the script ships chunks of that size
    worst = json.dumps({"attempt_id": "a" * 128, "offset": 2**63,
                        "data": base64.b64encode(b"\xff" * LOG_CHUNK_BYTES).decode()})
    assert len(worst.encode()) < MAX_BODY
