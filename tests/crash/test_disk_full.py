"""Local jobs when the broker's data dir runs out of space (its disk is full for a while).

Found by an acceptance review of issue 11 (`szb serve` with its data dir on a small tmpfs):
a job that finished while the disk was full had its exit code lost (the runner's write of
`exit_code` failed and the runner died), so the broker called the attempt lost and ran the
finished job a second time; a job printing while the disk was full had its runner die on the
failed write to `output.log`, which killed the job (its output pipe closed) and re-ran it; a
submit while the disk was full failed `INTERNAL: internal error: OperationalError`, which no
client retries and which says nothing of the disk.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for


def _fill(data: Path) -> Path:
    """Take every free byte of the data dir's filesystem; returns the file to delete to free it."""
    filler = data / "filler"
    # Unbuffered: a buffered file keeps what the last short write left over and raises ENOSPC
    # again when it is closed, which happened or not by how the free space fell in 64 KiB steps.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def _ledger() -> tuple[Path, Path]:
    """A ledger every job user may append to, and a folder for the test's go-ahead files."""
    folder = Path(tempfile.mkdtemp(prefix="szb-disk-"))
    folder.chmod(0o1777)
    ledger = folder / "ledger"
    ledger.touch()
    ledger.chmod(0o666)
    return ledger, folder


def _until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


Done = Callable[[Path, int], bool]
"""Whether the runner (its attempt folder, its pid) has gone far enough to free the disk."""


def _gone(runner: int) -> bool:
    return not Path(f"/proc/{runner}").exists()


def _run(small_disk: Path, tmp_path: Path, job_code: str, folder: Path, done: Done) -> job_pb2.Job:
    """Submit the job, fill the disk once it runs, let it go on (`go`), free the disk once `done`.

    The job is then told `go2` and the test waits for its end.
    """
    config = write_broker_config(tmp_path)
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec(f"full-{uuid.uuid4().hex[:6]}", [PY, "-c", job_code])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            _until("the job's start", lambda: "start" in (folder / "ledger").read_text())
            attempt = small_disk / "local" / f"{job.id}-a1"
            runner = int((attempt / "runner.pid").read_text())
            filler = _fill(small_disk)
            (folder / "go").touch()
            _until("the runner to meet the full disk", lambda: done(attempt, runner))
            filler.unlink()
            (folder / "go2").touch()
            return wait_for(stub, job.id, TERMINAL, timeout=60)
    finally:
        broker.stop()


def test_a_job_that_ends_while_the_disk_is_full_keeps_its_result(small_disk: Path, tmp_path: Path) -> None:
    ledger, folder = _ledger()
    code = (
        "import os, time\n"
        f"open({str(ledger)!r}, 'a').write('start\\n')\n"
        f"while not os.path.exists({str(folder / 'go')!r}): time.sleep(0.05)\n"
        f"open({str(ledger)!r}, 'a').write('end\\n')\n"
    )
    # The disk is freed once the runner recorded the exit code (or died without doing so).
    job = _run(small_disk, tmp_path, code, folder, lambda a, r: (a / "exit_code").exists() or _gone(r))
    assert ledger.read_text().splitlines() == ["start", "end"], "the finished job ran again"
    assert (job.state, job.exit_code, job.attempts) == (job_pb2.JOB_STATE_SUCCEEDED, 0, 1)


def test_a_job_printing_while_the_disk_is_full_runs_on_and_says_what_was_lost(
    small_disk: Path, tmp_path: Path
) -> None:
    ledger, folder = _ledger()
    code = (
        "import os, time\n"
        f"open({str(ledger)!r}, 'a').write('start\\n')\n"
        f"while not os.path.exists({str(folder / 'go')!r}): time.sleep(0.05)\n"
        "for i in range(64): print('x' * 4096, flush=True)\n"
        f"open({str(ledger)!r}, 'a').write('printed\\n')\n"
        f"while not os.path.exists({str(folder / 'go2')!r}): time.sleep(0.05)\n"
        "print('after the disk was freed', flush=True)\n"
        f"open({str(ledger)!r}, 'a').write('end\\n')\n"
    )
    # 256 KiB through the runner cannot fit: the job printed it all (the runner read it) or the
    # runner died on it (the job's output pipe broke).
    job = _run(small_disk, tmp_path, code, folder, lambda a, r: "printed" in ledger.read_text() or _gone(r))
    assert ledger.read_text().splitlines() == ["start", "printed", "end"], "the job was killed or ran again"
    assert (job.state, job.exit_code, job.attempts) == (job_pb2.JOB_STATE_SUCCEEDED, 0, 1)
    assert "after the disk was freed" in job.log_tail
    assert "No space left on device" in job.log_tail


def test_a_submit_while_the_disk_is_full_is_unavailable_and_safe_to_resend(
    small_disk: Path, tmp_path: Path
) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = spec("hello", [PY, "-c", "print('hello')"])
            filler = _fill(small_disk)
            with pytest.raises(grpc.RpcError) as refused:
                submit(stub, job, client_id="full-1")
            filler.unlink()
            error = refused.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert "disk is full" in (error.details() or "")
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            assert status is not None
            info = error_details_pb2.ErrorInfo()
            assert any(d.Unpack(info) for d in status.details) and info.reason == "STORE_UNAVAILABLE"
            # The client resends with its client_id once the disk has room: one job, and it runs.
            first = submit(stub, job, client_id="full-1").job
            again = submit(stub, job, client_id="full-1").job
            assert first.id == again.id
            done = wait_for(stub, first.id, TERMINAL)
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED
            listed = stub.ListJobs(pb.ListJobsRequest(), metadata=auth("team-a")).jobs
            assert [j.id for j in listed] == [first.id]
    finally:
        broker.stop()
