"""A Slurm job id is the attempt's only while the job's marks say so (broker id and token).

slurmctld killed before it saved a job reissues that job's id after its restart: the broker's
next job, or another user's, then answers for the attempt that had it. The attempt's reads
(`SlurmAdapter.status_of`) and stops (`cancel`, `preempt`) check the record's marks first.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from adapters.base import NotFoundError, TokenStatus, status_for
from adapters.slurm._records import slurm_number
from adapters.slurm._script import exit_code_file, output_file
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptState
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster, Tracker, launch
from tests.slurm.test_reclaim_grace_slurm import auth, broker_folder, spec, until

pytestmark = pytest.mark.slurm

TERMINAL = (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)


def _sh(cluster: SlurmCluster, *args: str) -> str:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False,
                         env={**os.environ, **cluster.env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def _outside_job(cluster: SlurmCluster, tmp_path: Path) -> str:
    """Another user's job (sbatch, no broker marks), running on an A800."""
    out = _sh(cluster, "sbatch", "--parsable", "-p", "a800", "--gres=gpu:a800:1", "-t", "5",
              "--comment", "not the broker's", f"--output={tmp_path}/outside.out", "--wrap", "sleep 300")
    job_id = out.strip().split(";")[0]
    _until(cluster, job_id, "RUNNING")
    return job_id


def _until(cluster: SlurmCluster, job_id: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (now := _sh(cluster, "squeue", "-h", "-j", job_id, "-o", "%T").strip()) != state:
        assert time.monotonic() < deadline, f"job {job_id} is {now or 'gone'}, not {state}"
        time.sleep(0.2)


def _time_limit(tracker: Tracker, job_id: str) -> float | None:
    jobs = tracker.adapter.rest.request("GET", f"job/{job_id}").get("jobs") or []
    return slurm_number(jobs[0].get("time_limit"))


def test_an_outside_job_is_neither_read_nor_stopped_as_an_attempt(slurm: Tracker, tmp_path: Path) -> None:
    """Found by a held-out review: status of an outside user's job id read its RUNNING state, and
    cancel/preempt with any token stopped the outside user's job."""
    cluster = slurm.cluster
    outside = _outside_job(cluster, tmp_path)
    try:
        adapter = slurm.adapter
        assert isinstance(adapter, TokenStatus)
        with pytest.raises(NotFoundError):
            adapter.status(outside)  # no broker's marks: never read as a broker's job
        with pytest.raises(NotFoundError):
            status_for(adapter, outside, "tok-someone")  # its own job gone, no files: vanished
        limit = _time_limit(slurm, outside)
        adapter.preempt(outside, "tok-someone", grace_s=30)
        adapter.preempt(outside, "tok-someone", grace_s=0)
        adapter.cancel(outside, "tok-someone")
        time.sleep(1)
        _until(cluster, outside, "RUNNING", timeout=1)
        assert _time_limit(slurm, outside) == limit
    finally:
        _sh(cluster, "scancel", outside)


def test_a_job_under_another_attempts_token_answers_from_that_tokens_files(slurm: Tracker) -> None:
    """Found by a held-out review: a job id slurmctld lost and reissued to the broker's next job
    gave that job's record (then CANCELLED) to the attempt that had the id first, and its own
    result (rc=0, its output) was lost. Here job B ended, and job A is read with B's token, as
    after such a reuse: B's own result answers, and stops with B's token leave A running."""
    done = launch(("sh", "-c", "echo b-was-here; exit 3"), token=f"tok-b-{uuid.uuid4().hex[:8]}")
    b_id = slurm.submit(done)
    slurm.wait(b_id, {AttemptState.FAILED})
    running = launch(("sh", "-c", "echo a-runs; sleep 300"), token=f"tok-a-{uuid.uuid4().hex[:8]}")
    a_id = slurm.submit(running)
    slurm.wait(a_id, {AttemptState.RUNNING})
    adapter = slurm.adapter
    # After a real reuse B had run as A's id, and its own files carry that id (`file_stem`).
    for named in (output_file, exit_code_file):
        named(adapter.settings, done.token, b_id).rename(named(adapter.settings, done.token, a_id))

    status = status_for(adapter, a_id, done.token)  # A's record: not B's
    assert status.state is AttemptState.FAILED and status.exit_code == 3, status
    assert "b-was-here" in status.log_tail and "a-runs" not in status.log_tail
    assert status_for(adapter, a_id, running.token).state is AttemptState.RUNNING
    never = f"tok-never-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotFoundError):  # no job, no files: the dispatcher's vanished attempt
        status_for(adapter, a_id, never)

    adapter.preempt(a_id, done.token, grace_s=30)
    adapter.cancel(a_id, done.token)
    adapter.cancel(a_id, never)
    time.sleep(1)
    assert status_for(adapter, a_id, running.token).state is AttemptState.RUNNING
    assert slurm_number(
        (adapter.rest.request("GET", f"job/{a_id}").get("jobs") or [{}])[0].get("time_limit")
    ) == 2 * 1.5  # its own limit (2 min x 1.5): not cut by the other token's preempt
    adapter.cancel(a_id, running.token)  # its own token stops it
    slurm.wait(a_id, {AttemptState.CANCELLED})


def test_a_broker_keeps_its_jobs_result_when_its_slurm_id_names_another_job(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Found by a held-out review: slurmctld lost job a's record and gave its id to the next job;
    the broker then read that job for a, recorded a CANCELLED and lost its result (rc=0, its
    output). Here the broker is down while a ends, and its store then names an outside user's
    running job as a's (the id reused): restarted, it records a's own result and leaves the
    outside job alone."""
    outside = _outside_job(slurm_cluster, tmp_path)
    (tmp_path / "broker").mkdir()
    broker = BrokerProcess(broker_folder(slurm_cluster, tmp_path / "broker"))
    try:
        broker.start()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            script = "echo a-started; sleep 6; echo a-finished; exit 0"
            ask = pb.SubmitJobRequest(job=spec("a", script, 1))
            submitted = stub.SubmitJob(ask, metadata=auth("borrower"))
            job_id = submitted.job.id
            get = lambda: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth("borrower")).job  # noqa: E731
            until(lambda: get().state == job_pb2.JOB_STATE_RUNNING, "job a never ran", timeout=60)
        broker.kill()
        db = sqlite3.connect(tmp_path / "broker" / "data" / "broker.db", isolation_level=None, timeout=30)
        token, own_id = db.execute("SELECT token, backend_id FROM attempts WHERE job_id = ?",
                                   (job_id,)).fetchone()
        out = tmp_path / "broker" / "slurm-output"  # (its exit code: `<token>.<key>.<job id>.rc`)
        until(lambda: any(out.glob(f"{token}.*.{own_id}.rc")), "a never ended", 60)
        # After a real reuse a had run as the outside job's id, and its own files carry that id.
        for own in out.glob(f"{token}.*.{own_id}.*"):
            own.rename(own.with_name(own.name.replace(f".{own_id}.", f".{outside}.")))
        db.execute("UPDATE attempts SET backend_id = ? WHERE job_id = ?", (outside, job_id))
        db.close()
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            until(lambda: get().state in TERMINAL, f"job a never ended: {get().message}", timeout=60)
            job = get()
            assert job.state == job_pb2.JOB_STATE_SUCCEEDED and job.exit_code == 0, job
            assert "a-finished" in job.log_tail, job.log_tail
            stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("borrower"))  # (ended: a no-op)
        time.sleep(2)  # a reconciliation pass (every 2 s) took nothing of the outside user's
        _until(slurm_cluster, outside, "RUNNING", timeout=1)
    finally:
        broker.stop()
        _sh(slurm_cluster, "scancel", outside)
