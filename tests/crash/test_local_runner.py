"""The local executor after a broker killed between starting a job and recording its pid.

Found by the chaos harness: a job could run twice when the broker died in that window (the
retry of the launch found no trace and started it again). Now the intent is on disk before
the spawn and the runner records its own pid, so a restarted broker follows the first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.local import LocalAdapter
from broker.model import AttemptId, AttemptState, JobId, JobSpec, LaunchRequest, Offer, SiteId
from tests.brokerproc import JOB_PYTHON


def request(token: str, command: list[str]) -> LaunchRequest:
    spec = JobSpec(name="once", command=tuple(command), runtime_estimate=timedelta(minutes=1))
    offer = Offer(
        site=SiteId("local"), instance_type="local-cpu", accelerator=None, count=0, price_per_hour=0
    )
    return LaunchRequest(
        job_id=JobId("j-1"), attempt_id=AttemptId("j-1-a1"), token=token, spec=spec, offer=offer
    )


def test_a_run_started_before_the_pid_was_recorded_is_followed_not_repeated(tmp_path: Path) -> None:
    # The job runs sandboxed as the job user: it writes where that user may.
    shared = Path(tempfile.mkdtemp(prefix="szb-runs-"))
    shared.chmod(0o1777)
    runs = shared / "runs.txt"
    command = [JOB_PYTHON, "-c", f"open({str(runs)!r}, 'a').write('ran\\n'); import time; time.sleep(1)"]
    config = {"data_dir": str(tmp_path / "data"), "cpus": 2}
    first = LocalAdapter(SiteId("local"), config)
    token = first.submit(request("tok-1", command))
    # What a broker killed right after the spawn leaves behind: the intent, without the pid.
    meta_file = tmp_path / "data" / "local" / token / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["pid"] = None
    meta_file.write_text(json.dumps(meta))
    deadline = time.monotonic() + 60  # a process start; more than 10 s on a loaded box
    while not (meta_file.parent / "runner.pid").exists():  # a restart takes longer than this
        assert time.monotonic() < deadline, "the runner never recorded its pid"
        time.sleep(0.05)
    restarted = LocalAdapter(SiteId("local"), config)  # a new broker process
    assert restarted.submit(request("tok-1", command)) == token
    assert restarted.status(token).state is AttemptState.RUNNING
    deadline = time.monotonic() + 20
    while restarted.status(token).state is AttemptState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert restarted.status(token).state is AttemptState.SUCCEEDED
    assert runs.read_text() == "ran\n"


def test_an_ended_attempt_the_broker_keeps_asking_about_is_not_pruned(tmp_path: Path) -> None:
    """Review: with the store unable to record an end (a full disk), the retention, counting from
    the first poll that saw the end, removed the folder and its exit code: the next poll found
    the attempt gone, LOST, and the job ran again. It now counts from the last poll."""
    config = {"data_dir": str(tmp_path / "data"), "cpus": 2, "keep_finished_attempts": "1s"}
    adapter = LocalAdapter(SiteId("local"), config)
    token = adapter.submit(request("tok-1", [JOB_PYTHON, "-c", "print('done')"]))
    deadline = time.monotonic() + 30
    while adapter.status(token).state is AttemptState.RUNNING:
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.1)
    folder = tmp_path / "data" / "local" / token
    for _ in range(3):  # the broker asks again and again: it could not record the end
        time.sleep(0.6)
        assert adapter.status(token).state is AttemptState.SUCCEEDED
        assert adapter.retention.prune(time.time(), lambda path: False) == []
        assert folder.exists()
    time.sleep(1.2)  # it recorded the end and stopped asking: the retention runs from then
    assert adapter.retention.prune(time.time(), lambda path: False) == [token]
    assert not folder.exists()


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                          capture_output=True, check=False)  # fmt: skip
    return done.returncode == 0


def test_an_exit_code_on_a_disk_gone_read_only_waits_for_the_disk(tmp_path: Path) -> None:
    """Review: a job that ended while the data dir's filesystem had gone read-only (an ext4 error,
    errors=remount-ro) lost its exit code: the runner gave up on EROFS and exited, the broker read
    the attempt as lost and ran the job again. The runner now waits, as for a full disk."""
    from adapters._local_runner import EXIT_CODE_ROOM, _record_exit

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN, which this host does not give")
    try:
        reserved = disk / "exit_code.tmp"
        reserved.write_bytes(b" " * EXIT_CODE_ROOM)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        writer = threading.Thread(target=_record_exit, args=(reserved, 3))
        writer.start()
        writer.join(timeout=3)
        assert writer.is_alive(), "the runner gave up on the read-only disk"
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)  # the operator mends it
        writer.join(timeout=10)
        assert not writer.is_alive()
        assert (disk / "exit_code").read_text().strip() == "3"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def ended(attempt_dir: Path) -> Path:
    """The attempt's exit code file, once its runner has written it."""
    exit_code = attempt_dir / "exit_code"
    deadline = time.monotonic() + 60
    while not exit_code.exists():
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.05)
    return exit_code


def test_a_cancel_after_the_job_ended_does_not_rewrite_its_result(tmp_path: Path) -> None:
    """Held-out review: the job wrote its exit code 0, the broker had not read it yet, and a cancel
    then (or a reclaim's stop) marked the attempt cancelled: its status read CANCELLED."""
    adapter = LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "cpus": 2})
    name = adapter.submit(request("tok-1", [JOB_PYTHON, "-c", "print('done')"]))
    exit_code = ended(tmp_path / "data" / "local" / name)
    adapter.cancel(name, "tok-1")
    got = adapter.status(name)
    assert (got.state, got.exit_code) == (AttemptState.SUCCEEDED, 0)
    # A cancel that marked the attempt just before its exit code was written (a race the first
    # check cannot close) leaves it cancelled; one marked just after it does not.
    marked = exit_code.parent / "cancelled"
    marked.touch()
    ns = exit_code.stat().st_mtime_ns
    os.utime(marked, ns=(ns - 1_000_000, ns - 1_000_000))
    assert adapter.status(name).state is AttemptState.CANCELLED
    os.utime(marked, ns=(ns + 1_000_000, ns + 1_000_000))
    assert adapter.status(name).state is AttemptState.SUCCEEDED


def test_an_exit_code_file_left_blank_reads_as_unknown_not_as_a_failure(tmp_path: Path) -> None:
    """Held-out review: the runner reserves the file with blanks and a power cut before its write
    reached the disk left them; that read as exit 1 (FAILED). It is synced now, and blanks say lost."""
    adapter = LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "cpus": 2})
    name = adapter.submit(request("tok-1", [JOB_PYTHON, "-c", "print('done')"]))
    exit_code = ended(tmp_path / "data" / "local" / name)
    assert exit_code.read_text().strip() == "0"
    exit_code.write_text(" " * 16)
    got = adapter.status(name)
    assert got.state is AttemptState.LOST and got.exit_code is None and "result unknown" in got.message
