"""`szb backup`: a checked copy of the SQLite store, never a file that only looks like one.

The README's own line is run in tests/e2e/test_readme_quick_tour.py against a live `szb serve`.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.model import JobSpec, TenantId
from broker.store import SqliteStore, Submission
from tests.brokerproc import ROOT


def backup(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker.cli", "backup", *args], cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)


def store_with_a_job(data: Path) -> str:
    """A store in `data` holding one job; its id."""
    data.mkdir()
    store = SqliteStore(data / "broker.db")
    try:
        spec = JobSpec(name="kept", command=("true",), runtime_estimate=timedelta(minutes=5))
        [(job, _)] = store.submit(TenantId("lab"), [Submission(spec)], datetime.now(UTC))
        return job.id
    finally:
        store.close()


def test_a_copy_is_written_once_checked_and_opens_as_the_store(tmp_path: Path) -> None:
    job_id = store_with_a_job(tmp_path / ".szb")
    done = backup(tmp_path, "copy.db")
    assert done.returncode == 0, done.stderr
    assert "1 jobs" in done.stdout and "To restore: stop szb serve" in done.stdout, done.stdout
    # Its owner's only, as the data dir keeps the store (jobs' environments are in it): it was 0644.
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600
    copy = SqliteStore(tmp_path / "copy.db")
    try:
        assert copy.get(job_id).spec.name == "kept"
    finally:
        copy.close()
    again = backup(tmp_path, "copy.db")  # never over an earlier backup
    assert again.returncode == 1 and "copy.db exists" in again.stderr, again.stderr


def test_no_store_and_a_damaged_store_leave_no_copy(tmp_path: Path) -> None:
    missing = backup(tmp_path, "copy.db", "--data-dir", "nowhere")
    assert missing.returncode == 1 and "no broker store at nowhere/broker.db" in missing.stderr
    assert "--data-dir" in missing.stderr and "pg_dump" in missing.stderr
    assert not (tmp_path / "nowhere").exists()  # nothing created where the user expected a store
    data = tmp_path / "data"
    store_with_a_job(data)
    raw = bytearray((data / "broker.db").read_bytes())
    raw[-4096:] = b"\xff" * 4096  # the last page overwritten
    (data / "broker.db").write_bytes(bytes(raw))
    damaged = backup(tmp_path, "copy.db", "--data-dir", "data")
    assert damaged.returncode == 1, damaged.stdout
    assert "damaged" in damaged.stderr or "malformed" in damaged.stderr, damaged.stderr
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "copy.db.partial").exists()


def test_a_destination_folder_that_is_not_there_is_named_not_the_store(tmp_path: Path) -> None:
    # SQLite's "unable to open database file" was reported as the store's: "cannot read the broker
    # store at .szb/broker.db", a store that was fine.
    store_with_a_job(tmp_path / ".szb")
    out = backup(tmp_path, "nowhere/copy.db")
    assert out.returncode == 1
    assert f"cannot write nowhere/copy.db: no such folder ({tmp_path / 'nowhere'})" in out.stderr, out.stderr
    assert "broker store" not in out.stderr
