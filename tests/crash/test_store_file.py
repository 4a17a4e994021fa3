"""`szb serve` on a store file it cannot use: damaged, cut short, or on a read-only disk.

Found by an acceptance review of issue 11: the broker refused to start (no silent loss), but
said only SQLite's words, naming neither the file nor what to do: `broker stopped: file is not
a database`, `database disk image is malformed`, `unable to open database file` (a read-only
data dir); a store file zeroed to 0 bytes was taken for a new store: the broker served on
with every job, attempt and spend forgotten; and a store damaged where the start does not read
answered every call `INTERNAL: internal error: DatabaseError`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import ROOT, BrokerProcess
from tests.crash.test_disk_full import _fill
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for


def _with_a_finished_job(config: Path, *, crash: bool = False) -> tuple[Path, str]:
    """Run the broker once (one job to its end), stop it cleanly (or SIGKILL it: `crash`); returns
    its store file and the job."""
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            job = submit(stub, spec("kept", [PY, "-c", "print('kept')"])).job
            assert wait_for(stub, job.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        broker.kill() if crash else broker.stop()
    return config.parent / "data" / "broker.db", job.id


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    """`szb serve` as an operator starts it; it must stop at once with its reason."""
    argv = [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), "--listen", "127.0.0.1:0"]
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    try:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired as still:  # (the process is killed)
        served = still.stdout
        raise AssertionError(f"szb serve went on serving on the store it was given:\n{served!r}") from None


@pytest.mark.parametrize("damage", ["garbage", "cut", "zeroed"])
def test_a_damaged_store_file_is_named_with_what_to_do(tmp_path: Path, damage: str) -> None:
    config = write_broker_config(tmp_path)
    store, _ = _with_a_finished_job(config)
    for extra in ("-wal", "-shm"):  # a clean stop folds the WAL in
        Path(f"{store}{extra}").unlink(missing_ok=True)
    size = store.stat().st_size
    if damage == "garbage":
        store.write_bytes(os.urandom(size))
    else:
        os.truncate(store, 0 if damage == "zeroed" else 4096)
    run = _serve(config)
    assert run.returncode == 1, run.stdout + run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert f"store {store}:" in line, line
    assert "restore it from a backup" in line, line


def test_a_read_only_data_dir_is_named_as_such(tmp_path: Path, small_disk: Path) -> None:
    config = write_broker_config(tmp_path)
    _with_a_finished_job(config)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    run = _serve(config)
    assert run.returncode == 1, run.stdout + run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert f"store {small_disk / 'broker.db'}:" in line, line
    assert f"{small_disk} is on a read-only file system" in line, line


def test_a_store_damaged_where_the_start_does_not_read_says_so_on_each_call(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    store, job_id = _with_a_finished_job(config)
    with sqlite3.connect(store) as db:  # the events table's first page, overwritten
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
    with open(store, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xee" * page)
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth("team-a"))
        assert refused.value.code() == grpc.StatusCode.INTERNAL
        details = refused.value.details() or ""
        assert "the store is damaged" in details and "restore it from a backup" in details, details
        assert broker.said("the store is damaged"), "".join(broker.output)  # the operator's log
    finally:
        broker.stop()


@pytest.mark.parametrize("store", ["kept", "new"])
def test_a_full_data_dir_is_named_with_what_to_do(tmp_path: Path, small_disk: Path, store: str) -> None:
    # Found by starting `szb serve` on a full data dir: with a store kept from an earlier run it
    # stopped with `store …/broker.db: disk I/O error`, with a new one `…: database or disk is
    # full`; neither named the data dir nor said what to do.
    config = write_broker_config(tmp_path)
    if store == "kept":
        _with_a_finished_job(config)
    _fill(small_disk)
    run = _serve(config)
    assert run.returncode == 1, run.stdout + run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert f"store {small_disk / 'broker.db'}:" in line, line
    assert f"the data dir {small_disk} is on a full disk" in line, line
    assert "free space there" in line and "SZB_DATA_DIR" in line, line


def test_a_read_only_data_dir_left_by_a_crash_is_named_as_such(tmp_path: Path, small_disk: Path) -> None:
    """Found by a review: after a crash the -wal and -shm files are still there, SQLite opens the
    store, and the first write said only "attempt to write a readonly database"."""
    config = write_broker_config(tmp_path)
    _with_a_finished_job(config, crash=True)
    assert Path(f"{small_disk / 'broker.db'}-wal").exists()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    run = _serve(config)
    assert run.returncode == 1, run.stdout + run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert f"store {small_disk / 'broker.db'}:" in line, line
    assert f"{small_disk} is on a read-only file system" in line, line
