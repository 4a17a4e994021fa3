"""Nodes or partitions Slurm will not start work on now (reserved, draining, drained partition).

slurmrestd 22.05 answers a submit to a reserved or draining node with error 2068 *and* a job
id: Slurm queued the job. The broker took the reply for a failed launch, placed the job again
at once (an on-prem capacity error blocked nothing) and submitted it ~10 times a second; every
copy pended at Slurm and ran once the node came back, so one broker job ran many times. Now the
job id is the attempt's, a refused launch on-prem holds the offer back a while, and reserved or
draining nodes count as no capacity.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.base import RequestError
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptState
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster, Tracker, launch
from tests.slurm.onprem import TERMINAL, auth, write_onprem_config

pytestmark = pytest.mark.slurm

NODE = "szb-a800"


def scontrol(cluster: SlurmCluster, *args: str) -> None:
    run(cluster, "scontrol", *args)


def run(cluster: SlurmCluster, *args: str) -> str:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False,
                         env={**os.environ, **cluster.env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def marked(cluster: SlurmCluster, mark: str) -> list[str]:
    """Slurm jobs not ended whose marks contain `mark` ("id STATE reason" each)."""
    out = run(cluster, "squeue", "-h", "-o", "%i %T %r %k")
    return [line for line in out.splitlines() if mark in line]


def until(check: Callable[[], bool], what: Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what()
        time.sleep(0.3)


def reserve(cluster: SlurmCluster, name: str) -> None:
    """A reservation of the a800 node for another user; waits until the node says RESERVED."""
    run(cluster, "scontrol", "create", "reservation", f"reservationname={name}", "users=nobody",
        f"nodes={NODE}", "starttime=now", "duration=30", "flags=ignore_jobs")
    until(lambda: "reserved" in run(cluster, "sinfo", "-h", "-N", "-n", NODE, "-o", "%T"),
          lambda: "not reserved")


def test_a_submit_slurm_refuses_but_queues_is_the_attempts_job(slurm: Tracker) -> None:
    """Error 2068 with a job id: the job is queued at Slurm, so it is the attempt's backend id."""
    cluster = slurm.cluster
    reserve(cluster, f"resv-{uuid.uuid4().hex[:6]}")
    try:
        request = launch(("/bin/sh", "-c", "echo ran"))
        backend_id = slurm.submit(request)
        assert backend_id.isdigit()
        assert slurm.submit(request) == backend_id  # the token's job, not another
        status = slurm.adapter.status(backend_id)
        assert status.state is AttemptState.PENDING and "ReqNodeNotAvail" in status.message, status
        assert len(marked(cluster, f"szb:token={request.token}")) == 1
    finally:
        run(cluster, "scontrol", "delete", "reservation=" + _reservation(cluster))
    done = slurm.wait(backend_id, {AttemptState.SUCCEEDED, AttemptState.FAILED}, timeout=60)
    assert done.state is AttemptState.SUCCEEDED, done


def test_a_refused_submit_slurm_queued_anyway_leaves_no_slurm_job(slurm: Tracker) -> None:
    """Over the partition's MaxTime: 2015 with a job id (PENDING PartitionConfig, never to start)."""
    cluster = slurm.cluster
    scontrol(cluster, "update", "partitionname=a800", "maxtime=1")
    try:
        request = launch(("/bin/sh", "-c", "echo never"), runtime=timedelta(minutes=10))
        with pytest.raises(RequestError, match="MaxTime"):
            slurm.submit(request)
        assert marked(cluster, f"szb:token={request.token}") == []
    finally:
        scontrol(cluster, "update", "partitionname=a800", "maxtime=infinite")


def _reservation(cluster: SlurmCluster) -> str:
    out = run(cluster, "scontrol", "-o", "show", "reservation")
    return next(w.split("=", 1)[1] for w in out.split() if w.startswith("ReservationName="))


def test_a_reserved_or_draining_node_is_no_capacity(slurm: Tracker) -> None:
    """Its units are neither total nor free, and a job running on a draining node frees none."""
    cluster = slurm.cluster
    reserve(cluster, f"resv-{uuid.uuid4().hex[:6]}")
    try:
        a800 = next(p for p in slurm.adapter.capacity(_now()).partitions if p.name == "a800")
        assert (a800.total, a800.free) == (0, 0), a800
    finally:
        run(cluster, "scontrol", "delete", "reservation=" + _reservation(cluster))
    holder = slurm.submit(launch(("/bin/sh", "-c", "sleep 60"), gpus=2))
    slurm.wait(holder, {AttemptState.RUNNING})
    run(cluster, "scontrol", "update", f"nodename={NODE}", "state=drain", "reason=szb-test")
    try:
        states = slurm.adapter.reads.read(_now())
        a800 = states["a800"]
        assert (a800.total, a800.free) == (0, 0), a800
        assert a800.running == (), a800  # what it frees, no new work can use
    finally:
        run(cluster, "scontrol", "update", f"nodename={NODE}", "state=resume")


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------ a real broker


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    slurm_cluster.wait_usable()
    # The default 60 s reconcile: orphans of refused submits stayed queued until it came.
    broker_id = f"szb-un-{uuid.uuid4().hex[:8]}"
    config = write_onprem_config(tmp_path / "b", slurm_cluster.env, broker_id=broker_id,
                                 reconcile_interval_s=60.0)
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def spec(runs: Path, gpus: int = 1) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name="once", command=["/bin/sh", "-c", f"echo $SLURM_JOB_ID >> {runs}; sleep 2"],
                          runtime_estimate=duration_pb2.Duration(seconds=120))
    msg.resources.accelerators.count = gpus
    msg.resources.accelerators.any_of.append("A800")
    return msg


def watch_once(
    broker: BrokerProcess, cluster: SlurmCluster, runs: Path,
    block: Callable[[], None], lift: Callable[[], None],
) -> job_pb2.Job:
    """Submit while `block` holds the node or partition, watch 15 s, `lift` it: the job's end."""
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        block()
        lifted = False
        try:
            job_id = stub.SubmitJob(pb.SubmitJobRequest(job=spec(runs)), metadata=auth()).job.id
            most, deadline = 0, time.monotonic() + 15
            while time.monotonic() < deadline:
                most = max(most, len(marked(cluster, f"szb:job={job_id};")))
                time.sleep(0.3)
            job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job
            assert most <= 1, f"{most} Slurm jobs at once for one broker job"
            assert job.attempts <= 3, f"{job.attempts} attempts in 15 s: {job.message}"
            lift()
            lifted = True
            deadline = time.monotonic() + 90
            get = pb.GetJobRequest(id=job_id)
            while (job := stub.GetJob(get, metadata=auth()).job).state not in TERMINAL:
                assert time.monotonic() < deadline, job.message
                time.sleep(0.3)
        finally:
            if not lifted:
                lift()
        time.sleep(5)  # any other copy Slurm held would have started by now
        assert marked(cluster, f"szb:job={job_id};") == []
        return job


def test_a_reserved_node_runs_the_job_once_after_the_reservation(
    broker: BrokerProcess, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    name = f"resv-{uuid.uuid4().hex[:6]}"
    job = watch_once(broker, slurm_cluster, runs, lambda: reserve(slurm_cluster, name),
                     lambda: scontrol(slurm_cluster, "delete", f"reservation={name}"))
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert len(runs.read_text().split()) == 1, runs.read_text()


def test_a_draining_node_runs_the_job_once_after_it_resumes(
    broker: BrokerProcess, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    holder = slurm_cluster_job(slurm_cluster, tmp_path)

    def drain() -> None:
        until(lambda: "RUNNING" in run(slurm_cluster, "squeue", "-h", "-j", holder, "-o", "%T"),
              lambda: "holder")
        run(slurm_cluster, "scontrol", "update", f"nodename={NODE}", "state=drain", "reason=szb-test")

    def resume() -> None:
        run(slurm_cluster, "scancel", holder)
        run(slurm_cluster, "scontrol", "update", f"nodename={NODE}", "state=resume")

    job = watch_once(broker, slurm_cluster, runs, drain, resume)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert len(runs.read_text().split()) == 1, runs.read_text()


def test_a_partition_slurm_refuses_jobs_for_is_not_submitted_to_in_a_loop(
    broker: BrokerProcess, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A drained partition: Slurm refuses (2070) with no job id while its nodes look free."""
    runs = tmp_path / "runs.txt"
    job = watch_once(broker, slurm_cluster, runs,
                     lambda: scontrol(slurm_cluster, "update", "partitionname=a800", "state=drain"),
                     lambda: scontrol(slurm_cluster, "update", "partitionname=a800", "state=up"))
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert len(runs.read_text().split()) == 1, runs.read_text()


def slurm_cluster_job(cluster: SlurmCluster, tmp_path: Path) -> str:
    """A job of someone else's on the a800 node (2 GPUs), for the node to drain under."""
    out = run(cluster, "sbatch", "--parsable", "-p", "a800", "--gres=gpu:a800:2", "-t", "5",
              f"--output={tmp_path}/holder.out", "--wrap", "sleep 120")
    return out.strip().split(";")[0]
