"""Local jobs when the broker, or a job's runner, is SIGKILLed at an awkward moment.

Found by an acceptance review of issue 11, killing things by hand around `szb serve`:
- the broker killed during a cancel's grace period (a job that ignores SIGTERM, or takes its
  time to save a checkpoint) never finished the cancel after its restart: the job ran on
  unseen and its slots were handed to the next job;
- a job's runner killed (the OOM killer, an operator's `kill -9`) left the job running while
  the attempt was called lost and requeued, so the job ran twice at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.processes import Held, held_or_none


def _ledger() -> Path:
    """A file every job user may append to (each attempt runs under its own uid)."""
    folder = Path(tempfile.mkdtemp(prefix="szb-ledger-"))
    folder.chmod(0o1777)
    ledger = folder / "ledger"
    ledger.touch()
    ledger.chmod(0o666)
    return ledger


def _wait_lines(ledger: Path, n: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(lines := ledger.read_text().splitlines()) < n:
        assert time.monotonic() < deadline, f"ledger has {lines}, wanted {n} lines"
        time.sleep(0.1)
    return lines


def _attempt_dir(config: Path, job_id: str, number: int = 1) -> Path:
    return config.parent / "data" / "local" / f"{job_id}-a{number}"


def test_a_cancel_cut_short_by_a_broker_kill_is_finished_after_the_restart(tmp_path: Path) -> None:
    # A grace period long enough for the kill to land inside it; the restart uses a short one,
    # but the stop it finishes keeps the deadline the cancel gave (`stop_deadline`).
    config = write_broker_config(tmp_path, cancel_grace_s=15)
    broker = BrokerProcess(config)
    broker.start()
    ledger = _ledger()
    code = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(ledger)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(600)"
    )
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec(f"stubborn-{uuid.uuid4().hex[:6]}", [PY, "-c", code])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            (pid,) = (int(line) for line in _wait_lines(ledger, 1))
            job_process = Held(pid)  # it sleeps: this is the job's process
            # The cancel waits out the grace period before its SIGKILL: the broker dies meanwhile.
            cancel = stub.CancelJob.future(pb.CancelJobRequest(id=job.id), metadata=auth("team-a"))
            marker = _attempt_dir(config, job.id) / "cancelled"
            deadline = time.monotonic() + 20
            while not marker.exists():
                assert time.monotonic() < deadline, "the cancel never reached the local executor"
                time.sleep(0.05)
            broker.kill()
            assert cancel.exception() is not None  # the broker died before answering
        write_broker_config(tmp_path, cancel_grace_s=1)
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            assert wait_for(stub, job.id, TERMINAL).state == job_pb2.JOB_STATE_CANCELLED
            survived = not job_process.wait_gone(60)
            job_process.kill()
            assert not survived, "the cancelled job ran on after the broker's restart (no SIGKILL)"
    finally:
        broker.stop()


def test_a_job_whose_runner_was_killed_is_stopped_before_it_runs_again(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    broker = BrokerProcess(config)
    broker.start()
    ledger = _ledger()
    code = f"import os, time; open({str(ledger)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(600)"
    runs: list[Held] = []
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec(f"once-{uuid.uuid4().hex[:6]}", [PY, "-c", code])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            runs.append(Held(int(_wait_lines(ledger, 1)[0])))
            runner = int((_attempt_dir(config, job.id) / "runner.pid").read_text())
            os.kill(runner, signal.SIGKILL)  # the job itself lives on, orphaned
            second = int(_wait_lines(ledger, 2)[1])  # requeued: a second run started
            runs.extend(r for r in [held_or_none(second)] if r is not None)
            first_alive = runs[0].alive()
            stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=auth("team-a"))
            assert not first_alive, "the first run still ran when the job was started again"
    finally:
        for run in runs:
            run.kill()
        broker.stop()


def _process_with_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A process of no job's taking the pid `pid` (as after a reboot), through ns_last_pid."""
    for _ in range(50):  # other processes on the host may take it first
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


def test_a_runner_pid_taken_by_another_process_is_not_taken_for_the_job(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    broker = BrokerProcess(config)
    broker.start()
    stranger = None
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            sleeper = [PY, "-c", "import time; time.sleep(600)"]
            job = submit(stub, spec(f"gone-{uuid.uuid4().hex[:6]}", sleeper))
            wait_for(stub, job.job.id, {job_pb2.JOB_STATE_RUNNING})
        broker.kill()
        # The host goes down with the broker: runner and job are gone, and their pid is another's.
        runner = int((_attempt_dir(config, job.job.id) / "runner.pid").read_text())
        os.killpg(runner, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{runner}").exists() and time.monotonic() < deadline:  # reaped too
            time.sleep(0.05)
        stranger = _process_with_pid(runner)
        if stranger is None:
            pytest.skip("could not place a process on the runner's pid")
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            # Its attempt is lost (the runner is gone) and the job runs again: a second attempt.
            deadline = time.monotonic() + 30
            get = pb.GetJobRequest(id=job.job.id)
            while (now := stub.GetJob(get, metadata=auth("team-a")).job).attempts < 2:
                assert time.monotonic() < deadline, f"still {now.state} on attempt 1: a stranger taken for it"
                time.sleep(0.2)
            stub.CancelJob(pb.CancelJobRequest(id=job.job.id), metadata=auth("team-a"))
        assert stranger.poll() is None, "the broker signalled a process that was not its job's"
    finally:
        if stranger is not None:
            stranger.kill()
            stranger.wait()
        broker.stop()


def test_a_job_that_ends_while_the_broker_is_down_ends_when_it_did(tmp_path: Path) -> None:
    """Its end was dated by the restarted broker's first look: a 20 s job showed 35 s run and was
    billed and learnt (runtime ratios) so. It ends when its exit code was written."""
    config = write_broker_config(tmp_path)
    broker = BrokerProcess(config)
    broker.start()
    ledger = _ledger()
    code = f"import time; open({str(ledger)!r}, 'a').write('start\\n'); time.sleep(3)"
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec(f"short-{uuid.uuid4().hex[:6]}", [PY, "-c", code])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            _wait_lines(ledger, 1)
            broker.kill()
        exit_file = _attempt_dir(config, job.id) / "exit_code"
        deadline = time.monotonic() + 30
        while not exit_file.exists():
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.1)
        time.sleep(8)  # the broker stays down well past the job's end
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            assert wait_for(stub, job.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
            events = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), metadata=auth("team-a"), timeout=5))
        times = {r.event.kind: r.event.time.ToDatetime().timestamp() for r in events}
        ended = exit_file.stat().st_mtime
        assert abs(times["finished"] - ended) < 1.0, (times, ended)
        assert times["finished"] - times["running"] < 6.0, times  # it ran 3 s, not 3 s + the downtime
    finally:
        broker.stop()
