"""A job that starts and ends between two polls of its backend still ran (szb serve, local site).

Such a job went PROVISIONING -> SUCCEEDED (or FAILED) with no RUNNING event: `szb get` had no
start time, `szb list --wide` showed RAN "-" for a job that ran, and its history skipped
"running". The poll that sees it ended now records its run first, at the time the local
executor started it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.e2e.conftest import TOKENS, auth, write_broker_config
from tests.job_events import events_until

TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
POLL_S = 4.0
"""Long enough that a job running `true` is over before the broker first polls it."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = write_broker_config(tmp_path_factory.mktemp("fastrun"))
    config.write_text(config.read_text().replace("poll_interval_s: 0.2", f"poll_interval_s: {POLL_S}"))
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def ended(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> job_pb2.Job:
    deadline, get = time.monotonic() + 120, pb.GetJobRequest(id=job_id)
    while (job := stub.GetJob(get, metadata=auth("team-a")).job).state not in TERMINAL:
        assert time.monotonic() < deadline, job.message
        time.sleep(0.2)
    return job


@pytest.mark.parametrize(
    ("script", "state", "exit_code"),
    [("true", job_pb2.JOB_STATE_SUCCEEDED, 0), ("exit 3", job_pb2.JOB_STATE_FAILED, 3)],
)
def test_a_job_over_before_the_first_poll_has_a_run(
    broker: BrokerProcess, script: str, state: int, exit_code: int
) -> None:
    spec = job_pb2.JobSpec(name="quick", command=["/bin/sh", "-c", script],
                           runtime_estimate=duration_pb2.Duration(seconds=60))
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a")).job.id
        job = ended(stub, job_id)
        assert (job.state, job.exit_code) == (state, exit_code), job.message
        events = events_until(stub, job_id, auth("team-a"), lambda evs: evs[-1].state in TERMINAL)
    states = [e.state for e in events]
    assert job_pb2.JOB_STATE_RUNNING in states, [e.kind for e in events]
    running = states.index(job_pb2.JOB_STATE_RUNNING)
    assert states[running - 1] == job_pb2.JOB_STATE_PROVISIONING and states[running + 1] == state, states
    assert events[running].kind == "running" and events[running].message == "running on local"
    assert events[running].seq < events[-1].seq
    # GetJob: it started, and no later than it ended.
    assert job.HasField("start_time") and job.HasField("end_time"), job
    assert job.start_time.ToDatetime() <= job.end_time.ToDatetime()
    provisioning = events[states.index(job_pb2.JOB_STATE_PROVISIONING)]
    assert job.start_time.ToDatetime() >= provisioning.time.ToDatetime()
    # szb get says when it started; szb list --wide gives it a run time.
    got = szb(broker, TOKENS["team-a"], "get", job_id, "-o", "json")
    assert got.returncode == 0 and '"start_time"' in got.stdout, got.stdout
    table = szb(broker, TOKENS["team-a"], "list", "--wide", "--page-size", "1000", env={"COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "RAN" in line)
    row = next(line for line in table.stdout.splitlines() if job_id in line)
    cells = dict(zip(_cells(header), _cells(row), strict=False))
    assert re.fullmatch(r"\d+m\d\ds", cells["RAN"]), table.stdout


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
