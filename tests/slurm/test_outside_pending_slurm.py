"""Another Slurm user's pending jobs in the wait model (found by a held-out review).

Only jobs pending for capacity or their turn (Resources, Priority) stand ahead of a new job: a
held job (JobHeldUser), one deferred to a begin time (BeginTime) or waiting on another job
(Dependency) takes no units when a new job could start. Before, every pending job counted: a
held job on an idle partition made a 1-GPU job wait a day, a job deferred by 5 hours made it
wait 15, and on a full partition a held job added a day to a wait of under 10 minutes. A job
array's pending tasks count one by one, and the broker's projected line has the jobs other
users have pending for capacity ahead of a new job (it had only the broker's own).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from adapters.slurm._records import array_tasks
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.serde_explain import decision_from_proto
from tests.brokerproc import BrokerProcess
from tests.slurm.conftest import SlurmCluster, Tracker
from tests.slurm.onprem import SITE, auth, write_onprem_config
from tests.slurm.test_broker_on_slurm import spec

pytestmark = pytest.mark.slurm


class Outside:
    """sbatch jobs of another user's on the test cluster (cancelled at teardown)."""

    def __init__(self, cluster: SlurmCluster) -> None:
        self.env = {**os.environ, **cluster.env}
        self.ids: list[str] = []

    def sbatch(self, *args: str, gpus: int = 1, minutes: int = 10) -> str:
        """One job on a800 holding `gpus` for at most `minutes` (it sleeps past that)."""
        out = subprocess.run(
            ["sbatch", "--parsable", "-p", "a800", f"--gres=gpu:a800:{gpus}", "-t", str(minutes),
             "-o", "/dev/null", *args, "--wrap", f"sleep {minutes * 60}"],
            env=self.env, capture_output=True, text=True, timeout=30, check=True,
        )
        self.ids.append(out.stdout.strip().split(";")[0])
        return self.ids[-1]

    def squeue(self) -> dict[str, tuple[str, str]]:
        """Job id -> (state, reason) of the jobs submitted here (array tasks by array id)."""
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%F %T %r"], env=self.env, capture_output=True,
                             text=True, timeout=30, check=True)
        rows = (line.split() for line in out.stdout.splitlines())
        return {f[0]: (f[1], f[2]) for f in rows if f[0] in self.ids}

    def until(self, check: Callable[[dict[str, tuple[str, str]]], bool]) -> None:
        deadline = time.monotonic() + 60
        while not check(seen := self.squeue()):
            assert time.monotonic() < deadline, f"outside jobs never settled: {seen}"
            time.sleep(0.3)


@pytest.fixture
def outside(slurm_cluster: SlurmCluster) -> Iterator[Outside]:
    slurm_cluster.wait_usable()
    jobs = Outside(slurm_cluster)
    yield jobs
    if jobs.ids:
        subprocess.run(["scancel", *jobs.ids], env=jobs.env, timeout=30, check=False)


def _reasons(jobs: Outside, *wanted: str) -> Callable[[dict[str, tuple[str, str]]], bool]:
    return lambda seen: sorted(r for _, r in seen.values()) == sorted(wanted)


def test_held_deferred_and_dependent_jobs_stand_ahead_of_no_one(slurm: Tracker, outside: Outside) -> None:
    outside.sbatch("-H")
    begins = outside.sbatch("--begin=now+5hours", minutes=60)
    outside.sbatch(f"--dependency=afterok:{begins}")
    outside.until(_reasons(outside, "JobHeldUser", "BeginTime", "Dependency"))
    # All four A800s are idle: a 1-GPU (or 4-GPU) job starts at once, as Slurm would start it.
    now = datetime.now(UTC)
    assert slurm.adapter.expected_wait_s("a800", 1, now) == 0
    assert slurm.adapter.expected_wait_s("a800", 4, now) == 0
    part = slurm.adapter.capacity(now).partition_for("A800")
    assert part is not None and part.queued_jobs == 0 and part.queued_accelerator_hours == 0, part


def test_a_held_job_adds_nothing_to_the_wait_on_a_full_partition(slurm: Tracker, outside: Outside) -> None:
    for _ in range(4):
        outside.sbatch(minutes=10)
    outside.sbatch("-H", gpus=4, minutes=600)
    outside.until(lambda seen: sorted(s for s, _ in seen.values()) == ["PENDING"] + ["RUNNING"] * 4)
    wait = slurm.adapter.expected_wait_s("a800", 1, datetime.now(UTC))
    assert wait is not None and 9 * 60 <= wait <= 10 * 60, wait  # when the first 10-min job ends


def test_a_pending_job_array_counts_each_of_its_tasks(slurm: Tracker, outside: Outside) -> None:
    """Slurm lists a job array's pending tasks as one record (`array_task_string` "0-39"): it
    counted as one 1-GPU job (0.17 GPU-hours queued) instead of 40 (6.7 GPU-hours)."""
    for _ in range(4):
        outside.sbatch(minutes=10)
    outside.sbatch("--array=0-39", minutes=10)
    outside.until(lambda seen: sorted(s for s, _ in seen.values()) == ["PENDING"] + ["RUNNING"] * 4)
    now = datetime.now(UTC)
    part = slurm.adapter.capacity(now).partition_for("A800")
    assert part is not None and part.queued_jobs == 40, part
    assert part.queued_accelerator_hours == pytest.approx(40 * 10 / 60), part
    # 40 ten-minute tasks on 4 GPUs after the running jobs' 10 minutes: close to two hours.
    wait = slurm.adapter.expected_wait_s("a800", 1, now)
    assert wait is not None and wait >= 100 * 60, wait


@pytest.mark.parametrize(("listed", "tasks"), [("0-39", 40), ("4-39", 36), ("1,3,8-20:4", 6), ("0-99%4", 100),
                                                ("", 1), (None, 1)])
def test_the_tasks_a_pending_array_record_lists(listed: str | None, tasks: int) -> None:
    """Ranges, steps and a throttle ("%4": how many run at once, not how many there are)."""
    assert array_tasks({"job_id": 9, "array_task_string": listed}) == tasks


@pytest.fixture
def broker(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    config = write_onprem_config(tmp_path, slurm_cluster.env, broker_id=f"szb-outq-{uuid.uuid4().hex[:8]}")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy.read_text() + "burst:\n  wait_model: projected\n")
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def test_the_broker_projects_a_new_job_behind_another_users_pending_job(
    outside: Outside, broker: BrokerProcess
) -> None:
    """The reviewer's scenario: four outside 10-minute jobs fill a800 and an outside 10-hour job
    for all four GPUs pends behind them (Resources). A 1-GPU job that may wait 20 minutes was
    projected to start in 10 and sent to Slurm's queue, where Slurm expected it in 10 hours."""
    for _ in range(4):
        outside.sbatch(minutes=10)
    outside.sbatch(gpus=4, minutes=600)
    settled = [("PENDING", "Resources")] + [("RUNNING", "None")] * 4
    outside.until(lambda seen: sorted(seen.values()) == settled)
    ask = spec("patient", "true", gpus=1, runtime_s=60, max_wait_s=1200)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        deadline = time.monotonic() + 30
        while True:  # (until the broker's capacity reading has caught up with the outside jobs)
            answer = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=ask), metadata=auth())
            decision = decision_from_proto(answer.explanation.decision)
            projection = decision["projection"]
            if projection["running_jobs"] == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert projection["partition"] == f"{SITE}/a800" and projection["backend_queue_jobs"] == 1, projection
        assert 10 * 3600 <= projection["wait_s"] <= 10.2 * 3600, projection  # 10 min, then 10 hours
        assert decision["action"] == "wait" and "exceeds max_wait" in decision["reasons"][0], decision
        job_id = stub.SubmitJob(pb.SubmitJobRequest(job=ask), metadata=auth()).job.id
        try:
            time.sleep(3)  # a few dispatch passes: it stays in the broker's queue, not Slurm's
            job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job
            assert job.state == job_pb2.JOB_STATE_QUEUED and not job.attempts, job
            assert "sent to its queue" not in job.message, job.message
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())
