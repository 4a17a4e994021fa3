"""`szb logs JOB [--follow]` against a running broker with the local executor (issue 12, obs. 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import ROOT, BrokerProcess
from tests.brokerproc import szb as run_szb
from tests.e2e.conftest import PY, TOKENS, auth, write_broker_config

RUNNING = job_pb2.JOB_STATE_RUNNING
SCRIPT = (
    "import time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.4)\nprint('done')"
)


def szb(broker: BrokerProcess, *args: str, tenant: str = "team-a") -> subprocess.CompletedProcess[str]:
    return run_szb(broker, TOKENS[tenant], *args)


def test_logs_follow_a_running_local_job_to_its_end(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = stub.SubmitJob(
            pb.SubmitJobRequest(
                job=job_pb2.JobSpec(
                    name="chatty",
                    command=[PY, "-c", SCRIPT],
                    runtime_estimate=duration_pb2.Duration(seconds=60),
                )
            ),
            metadata=auth("team-a"),
        ).job
        started = time.monotonic()
        followed = szb(broker, "logs", job.id, "--follow")
        assert followed.returncode == 0, followed.stderr
        expected = [f"line {i}" for i in range(5)] + ["done"]
        assert followed.stdout.splitlines() == expected
        # It followed the job: it ended only once the job had (5 x 0.4 s of output).
        assert time.monotonic() - started >= 1.6
        final = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED
        whole = szb(broker, "logs", job.id)
        assert whole.stdout == followed.stdout
        assert szb(broker, "logs", job.id, "--tail", "5").stdout == "done\n"
        # Through the API: chunks carry their byte offsets and the attempt.
        chunks = list(stub.StreamJobLogs(pb.StreamJobLogsRequest(id=job.id), metadata=auth("team-a")))
        assert chunks and chunks[0].chunk.offset == 0 and chunks[0].chunk.attempt_id.startswith(job.id)
        assert b"".join(c.chunk.data for c in chunks).decode() == followed.stdout
        # Another tenant's job does not exist for it.
        other = szb(broker, "logs", job.id, tenant="team-b")
        assert other.returncode == 1 and "NOT_FOUND" in other.stderr
        with pytest.raises(grpc.RpcError) as err:
            list(
                stub.StreamJobLogs(pb.StreamJobLogsRequest(id=job.id, tail_bytes=-1), metadata=auth("team-a"))
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT



def test_logs_follow_goes_on_across_a_broker_restart_without_repeating_a_line(tmp_path: Path) -> None:
    """Held-out review (issue 2): `szb logs --follow` died with "UNAVAILABLE: Stream removed" when
    the broker restarted mid-job, where `szb watch` on the same job reconnected and went on."""
    broker = BrokerProcess(write_broker_config(tmp_path / "b"))
    broker.start()
    try:
        slow = "import time\nfor i in range(12):\n    print('line', i, flush=True)\n    time.sleep(0.5)\n"
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            spec = job_pb2.JobSpec(name="chatty", command=[PY, "-c", slow],
                                   runtime_estimate=duration_pb2.Duration(seconds=60))
            job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a")).job
        env = {**os.environ, "SZB_SERVER": broker.address, "SZB_TOKEN": TOKENS["team-a"]}
        argv = [sys.executable, "-m", "broker.cli", "logs", job.id, "--follow"]
        follower = subprocess.Popen(argv, cwd=ROOT,
                                    env={**env, "GRPC_VERBOSITY": "ERROR"}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        assert follower.stdout is not None
        assert follower.stdout.readline() == "line 0\n"
        broker.kill()  # mid-job: the job runs on, its output with it
        time.sleep(1.0)
        broker.restart()
        rest = follower.stdout.read()  # (to its end; communicate() would skip what readline buffered)
        assert follower.wait(timeout=90) == 0, follower.stderr.read() if follower.stderr else ""
        assert ["line 0", *rest.splitlines()] == [f"line {i}" for i in range(12)], rest
    finally:
        broker.stop()


def test_logs_follow_tail_keeps_its_tail_when_it_connects_to_a_restarting_broker(tmp_path: Path) -> None:
    """Self-review: started while the broker was down, `szb logs --follow --tail N` reconnected
    asking for the whole output and printed all of it, not its tail."""
    broker = BrokerProcess(write_broker_config(tmp_path / "b"))
    broker.start()
    try:
        lines = "import time\nfor i in range(200):\n    print('line', i, flush=True)\n"
        lines += "time.sleep(20)\nprint('done')\n"  # (done only well after the restart)
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            spec = job_pb2.JobSpec(name="many", command=[PY, "-c", lines],
                                   runtime_estimate=duration_pb2.Duration(seconds=60))
            job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a")).job
            deadline = time.monotonic() + 30
            while "line 199" not in szb(broker, "logs", job.id).stdout:
                assert time.monotonic() < deadline, "the job never printed its lines"
                time.sleep(0.3)
        broker.kill()
        env = {**os.environ, "SZB_SERVER": broker.address, "SZB_TOKEN": TOKENS["team-a"]}
        env["GRPC_VERBOSITY"] = "ERROR"
        argv = [sys.executable, "-m", "broker.cli", "logs", job.id, "--follow", "--tail", "9"]
        follower = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        time.sleep(2.0)
        broker.restart()
        out, err = follower.communicate(timeout=90)
        assert follower.returncode == 0, err
        assert out == "line 199\ndone\n", out[:300]
    finally:
        broker.stop()


def test_logs_of_a_job_that_never_started_says_so_with_its_state(broker: BrokerProcess) -> None:
    # Review: `szb logs` of a queued job printed nothing at all, as for a job that printed nothing.
    def on_a800s(name: str, code: str) -> pb.SubmitJobRequest:
        spec = job_pb2.JobSpec(name=name, command=[PY, "-c", code])
        spec.runtime_estimate.seconds = 60
        spec.resources.accelerators.count = 4
        spec.resources.accelerators.any_of.append("A800")
        return pb.SubmitJobRequest(job=spec)

    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        hog = stub.SubmitJob(on_a800s("hog", "import time; time.sleep(60)"), metadata=auth("team-a")).job
        deadline = time.monotonic() + 60
        while stub.GetJob(pb.GetJobRequest(id=hog.id), metadata=auth("team-a")).job.state != RUNNING:
            assert time.monotonic() < deadline, "the hog never ran"
            time.sleep(0.2)
        # All 4 A800s are taken: this one waits.
        waits = stub.SubmitJob(on_a800s("waits", "print('x')"), metadata=auth("team-a")).job
        try:
            queued = szb(broker, "logs", waits.id)
            assert queued.returncode == 0 and queued.stdout == "", queued
            said = f"job {waits.id} has no attempt yet (state QUEUED): it has no output"
            assert said in queued.stderr, queued
            stub.CancelJob(pb.CancelJobRequest(id=waits.id), metadata=auth("team-a"))
            gone = szb(broker, "logs", waits.id)
            assert f"job {waits.id} never started (state CANCELLED)" in gone.stderr, gone
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=hog.id), metadata=auth("team-a"))
