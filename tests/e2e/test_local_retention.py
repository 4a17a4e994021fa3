"""The local site's attempt folders are removed some time after their attempts ended.

Found on a long-running broker: every attempt's folder under `<data_dir>/local/` (its output,
up to `max_output_bytes` each) stayed for good, so the data dir, the disk of the store, grew
without bound. With `keep_finished_attempts` the folders of attempts that ended longer ago are
removed at start and periodically, a live attempt's never; `szb logs` of such a job says its
output was removed by retention; `szb get` keeps its last lines (they are in the store).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for


def _config(tmp_path: Path, keep: str) -> Path:
    config = write_broker_config(tmp_path)
    text = config.read_text().replace("dispatch: {poll_interval_s: 0.2}", "dispatch: {poll_interval_s: 0.2, "
                                      "reconcile_interval_s: 0.5}")
    config.write_text(text.replace("local: {", f"local: {{keep_finished_attempts: {keep}, "))
    return config


def _until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_ended_attempts_folders_go_live_ones_stay_and_logs_says_why(tmp_path: Path) -> None:
    broker = BrokerProcess(_config(tmp_path, "2s"))
    broker.start()
    local = tmp_path / "data" / "local"
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            sleeper = submit(stub, spec("sleeper", [PY, "-c", "print('still here', flush=True); "
                                                    "import time; time.sleep(600)"])).job
            wait_for(stub, sleeper.id, {job_pb2.JOB_STATE_RUNNING})
            # It leaves a file in its HOME (its folder under job_root), as a job's scratch does.
            scratch = "import os; open('scratch.bin', 'wb').write(b'x' * 4096); print('home=' + os.getcwd())"
            done = submit(stub, spec("done", [PY, "-c", scratch + "; print('finished output')"])).job
            ended = wait_for(stub, done.id, TERMINAL)
            assert ended.state == job_pb2.JOB_STATE_SUCCEEDED, ended.message
            home = Path(ended.log_tail.split("home=", 1)[1].split()[0])
            assert (home / "scratch.bin").exists() and home.name == "work", home
            _until("the ended attempt's folder to go", lambda: not (local / f"{done.id}-a1").exists())
            _until("its folder under job_root to go too", lambda: not home.parent.exists())
            assert (local / f"{sleeper.id}-a1" / "meta.json").exists(), "a live attempt's folder was removed"
            assert stub.GetJob(pb.GetJobRequest(id=sleeper.id), metadata=auth("team-a")).job.state == (
                job_pb2.JOB_STATE_RUNNING
            )
            with pytest.raises(grpc.RpcError) as removed:
                list(stub.StreamJobLogs(pb.StreamJobLogsRequest(id=done.id), metadata=auth("team-a")))
            assert removed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "removed by retention" in (removed.value.details() or "")
            assert "keep_finished_attempts" in (removed.value.details() or "")
            got = stub.GetJob(pb.GetJobRequest(id=done.id), metadata=auth("team-a")).job
            assert "finished output" in got.log_tail
            live = b"".join(r.chunk.data for r in stub.StreamJobLogs(
                pb.StreamJobLogsRequest(id=sleeper.id), metadata=auth("team-a")))
            assert b"still here" in live
            stub.CancelJob(pb.CancelJobRequest(id=sleeper.id), metadata=auth("team-a"))
            wait_for(stub, sleeper.id, TERMINAL)
    finally:
        broker.stop()
    assert "Traceback" not in "".join(broker.output)


def test_folders_older_than_the_retention_go_at_start_but_not_an_unread_end(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="szb-keep-"))
    folder.chmod(0o1777)
    broker = BrokerProcess(write_broker_config(tmp_path))  # no retention: the folders stay
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        seen = submit(stub, spec("seen", [PY, "-c", "print('finished output')"])).job
        assert wait_for(stub, seen.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
        wait = f"import os, time\nwhile not os.path.exists({str(folder / 'go')!r}): time.sleep(0.05)\n"
        unread = submit(stub, spec("unread", [PY, "-c", wait + "print('ended unseen')"])).job
        wait_for(stub, unread.id, {job_pb2.JOB_STATE_RUNNING})
    broker.kill()  # the second job ends while no broker runs: its end is unread
    (folder / "go").touch()
    local = tmp_path / "data" / "local"
    _until("the unread job's end", lambda: (local / f"{unread.id}-a1" / "exit_code").exists())
    time.sleep(1.5)  # both ended longer ago than the retention below
    broker = BrokerProcess(_config(tmp_path, "1s"))
    broker.start()
    try:
        assert not (local / f"{seen.id}-a1").exists(), "an attempt ended long ago was kept"
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = wait_for(stub, unread.id, TERMINAL)
        assert (job.state, job.attempts) == (job_pb2.JOB_STATE_SUCCEEDED, 1), job.message
        assert "ended unseen" in job.log_tail
    finally:
        broker.stop()


@pytest.mark.parametrize("value", ["soon", "0s", "-1d"])
def test_a_bad_retention_names_its_file_and_line(tmp_path: Path, value: str) -> None:
    config = _config(tmp_path, value)
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "keep_finished" in text)
    argv = [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), "--listen", "127.0.0.1:0"]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert f"{config}:{line}:" in run.stderr, run.stderr
    assert "sites.local.keep_finished_attempts: must be" in run.stderr, run.stderr
