"""The broker end to end over gRPC, with the real Slurm test cluster as its on-prem site.

One broker process (`szb serve`) per module; its policy has one site, `shangzhuang-onprem`,
adapter `slurm`, partitions ascend (Ascend910B x4), a800 (A800 x4) and cpu. Every test
leaves the cluster idle again (its jobs cancelled), because the next one counts free GPUs.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.slurm import SlurmAdapter
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import AttemptState, OwnedInstance, SiteId
from broker.serde import state_from_proto
from tests.brokerproc import BrokerProcess
from tests.job_events import Events, events_until, has
from tests.slurm.conftest import SlurmCluster
from tests.slurm.onprem import SITE, auth, write_onprem_config

pytestmark = pytest.mark.slurm

Stub = broker_service_pb2_grpc.BrokerServiceStub
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


class OnPrem:
    """The broker process, a gRPC stub, and a direct adapter to look at Slurm itself."""

    def __init__(self, broker: BrokerProcess, stub: Stub, slurm: SlurmAdapter) -> None:
        self.broker = broker
        self.stub = stub
        self.slurm = slurm

    def submit(self, spec: job_pb2.JobSpec) -> str:
        return str(self.stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth()).job.id)

    def get(self, job_id: str) -> job_pb2.Job:
        return self.stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth()).job

    def wait(self, job_id: str, states: Collection[int], timeout: float = 60) -> job_pb2.Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {state_from_proto(job.state)}: {job.message}\n"
                                     + "".join(self.broker.output[-30:]))
            time.sleep(0.1)

    def cancel(self, job_id: str) -> None:
        self.stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth())

    def events(
        self, job_id: str, seconds: float = 1.0, until: Callable[[Events], bool] | None = None
    ) -> list[job_pb2.JobEvent]:
        """The job's events so far (WatchJob until it ends or `seconds` pass); given `until`, read
        until those events have arrived (a loaded broker may send them long after `seconds`)."""
        if until is not None:
            return events_until(self.stub, job_id, auth(), until)
        out = []
        try:
            for resp in self.stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=auth(), timeout=seconds):
                out.append(resp.event)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        return out

    def at_slurm(self, job_id: str) -> OwnedInstance | None:
        """The Slurm job the broker started for this job (by the marks in its comment)."""
        found = [o for o in self.slurm.list_owned() if o.job_id == job_id]
        return found[-1] if found else None

    def wait_at_slurm(self, job_id: str, states: set[AttemptState], timeout: float = 30) -> OwnedInstance:
        deadline = time.monotonic() + timeout
        while True:
            inst = self.at_slurm(job_id)
            if inst is not None and inst.state in states:
                return inst
            if time.monotonic() > deadline:
                raise AssertionError(f"slurm job for {job_id}: {inst}")
            time.sleep(0.2)

    def free(self, partition: str) -> int:
        snap = self.slurm.capacity(datetime.now(UTC))
        return next(p.free for p in snap.partitions if p.name == partition)

    def idle(self, timeout: float = 30) -> None:
        """Cancel whatever this broker still has at Slurm and wait until the GPUs are free."""
        for job in self.stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth()).jobs:
            if job.state not in TERMINAL:
                self.cancel(job.id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owned = self.slurm.list_owned()
            if all(o.state.terminal for o in owned) and self.free("a800") == 4 and self.free("ascend") == 4:
                return
            time.sleep(0.25)
        raise AssertionError(f"cluster not idle: {self.slurm.list_owned()}")


def spec(name: str, script: str, *, gpus: int = 0, accelerator: str = "A800", runtime_s: int = 60,
         max_wait_s: int | None = None) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=["/bin/sh", "-c", script],
                          runtime_estimate=duration_pb2.Duration(seconds=runtime_s))
    if gpus:
        msg.resources.accelerators.count = gpus
        msg.resources.accelerators.any_of.append(accelerator)
    if max_wait_s is not None:
        msg.max_wait.CopyFrom(duration_pb2.Duration(seconds=max_wait_s))
    return msg


@pytest.fixture(scope="module")
def onprem(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnPrem]:
    broker_id = f"szb-e2e-{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("onprem")
    config = write_onprem_config(folder, slurm_cluster.env, broker_id=broker_id)
    broker = BrokerProcess(config)
    broker.start()
    slurm = SlurmAdapter(SiteId(SITE), {"url": slurm_cluster.url, "token": slurm_cluster.token,
                                        "user": slurm_cluster.user, "broker_id": broker_id,
                                        "partitions": {"ascend": "Ascend910B", "a800": "A800", "cpu": None},
                                        "timeout_s": 5})
    channel = grpc.insecure_channel(broker.address)
    world = OnPrem(broker, broker_service_pb2_grpc.BrokerServiceStub(channel), slurm)
    try:
        yield world
    finally:
        try:
            slurm.ping()
        except Exception:
            slurm_cluster.restart()
        try:
            world.idle()
        finally:
            channel.close()
            broker.stop()
            for inst in slurm.list_owned():  # belt and braces: nothing of ours keeps GPUs
                slurm.cancel(inst.backend_id, inst.token or "")


@pytest.fixture
def world(onprem: OnPrem) -> Iterator[OnPrem]:
    onprem.idle()
    yield onprem
    onprem.idle()


def test_gpu_job_runs_on_slurm_and_succeeds_with_output(world: OnPrem) -> None:
    job_id = world.submit(spec("hello", "echo hello from $SLURM_JOB_PARTITION gpus=$CUDA_VISIBLE_DEVICES",
                               gpus=1))
    job = world.wait(job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert job.exit_code == 0 and job.site == SITE
    assert "hello from a800 gpus=0" in job.log_tail
    inst = world.at_slurm(job_id)
    assert inst is not None and inst.state is AttemptState.SUCCEEDED  # a real Slurm job did it
    kinds = [e.kind for e in world.events(job_id, until=has("finished"))]
    assert "placed" in kinds and "finished" in kinds


def test_the_agent_secret_is_in_the_job_env_not_in_slurm_marks_or_file_names(world: OnPrem) -> None:
    job_id = world.submit(spec("secret", 'echo "secret=$SZB_AGENT_TOKEN"'))
    job = world.wait(job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    secret = job.log_tail.split("secret=", 1)[1].split()[0]
    assert len(secret) >= 43  # 256 bits, url-safe base64
    inst = world.at_slurm(job_id)
    assert inst is not None and inst.token and inst.token != secret
    [slurm_job] = world.slurm.rest.request("GET", f"job/{inst.backend_id}")["jobs"]
    assert secret not in json.dumps(slurm_job)  # comment, name, output file name, ...
    outputs = [p.name for p in (world.broker.config.parent / "slurm-output").iterdir()]
    assert any(inst.token in name for name in outputs)  # the token still names the files
    assert not any(secret in name for name in outputs)
    assert all(secret not in str(e) for e in world.events(job_id))


def test_ascend_and_cpu_jobs_go_to_their_partitions(world: OnPrem) -> None:
    ascend = world.submit(spec("npu", "echo on $SLURM_JOB_PARTITION", gpus=2, accelerator="Ascend910B"))
    cpu = world.submit(spec("cpu", "echo on $SLURM_JOB_PARTITION"))
    for job_id, partition in ((ascend, "ascend"), (cpu, "cpu")):
        job = world.wait(job_id, TERMINAL)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
        assert f"on {partition}" in job.log_tail


def test_failing_job_reports_its_exit_code(world: OnPrem) -> None:
    job_id = world.submit(spec("fails", "echo about to fail >&2; exit 3", gpus=1))
    job = world.wait(job_id, TERMINAL)
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert job.exit_code == 3
    assert "about to fail" in job.log_tail


def test_cancel_cancels_the_slurm_job(world: OnPrem) -> None:
    job_id = world.submit(spec("long", "echo started; sleep 300", gpus=1, runtime_s=600))
    world.wait(job_id, {job_pb2.JOB_STATE_RUNNING})
    assert world.wait_at_slurm(job_id, {AttemptState.RUNNING}).state is AttemptState.RUNNING
    world.cancel(job_id)
    assert world.wait(job_id, TERMINAL).state == job_pb2.JOB_STATE_CANCELLED
    inst = world.wait_at_slurm(job_id, {AttemptState.CANCELLED})
    assert inst.state is AttemptState.CANCELLED
    assert world.slurm.status(inst.backend_id).state is AttemptState.CANCELLED


def test_job_larger_than_free_capacity_pends_with_a_wait_estimate(world: OnPrem) -> None:
    submitted = time.monotonic()
    blocker = world.submit(spec("half", "sleep 120", gpus=2, runtime_s=120))  # time limit 3 min
    world.wait(blocker, {job_pb2.JOB_STATE_RUNNING})
    big = spec("whole", "echo got all four", gpus=4, runtime_s=60)
    # szb explain (the broker's ExplainPlacement): the on-prem wait is the blocker's time left
    expl = world.stub.ExplainPlacement(pb.ExplainPlacementRequest(job=big), metadata=auth()).explanation
    asked = time.monotonic()
    decision = json.loads(expl.decision_json)
    assert decision["onprem_site"] == SITE and decision["onprem_partition"] == f"{SITE}/a800"
    # Projected (the default wait model): the blocker's 120 s estimate x the tenant's runtime
    # ratio, learned from the module's earlier jobs (those ran far under their estimates), less
    # what it has run since it was submitted.
    note = decision["projection"]
    expected_s = 120 * note["runtime_ratio"]
    assert note["partition"] == f"{SITE}/a800" and note["free_units"] == 2, note
    blocker_end = note["running"][0]
    assert blocker_end["units"] == 2, note
    assert expected_s - (asked - submitted) - 1 <= blocker_end["ends_in_s"] <= expected_s + 1, note
    assert decision["onprem_expected_wait_s"] == pytest.approx(blocker_end["ends_in_s"], abs=1), decision
    assert decision["action"] == "run" and "sent to its queue" in " ".join(decision["reasons"])
    # Slurm's own estimate for the offer still comes from the blocker's time limit.
    assert expl.chosen.instance_type == "a800" and expl.chosen.expected_wait_seconds > 60
    # submitted, it is sent to Slurm and pends there (Resources), not run elsewhere
    job_id = world.submit(big)
    job = world.wait(job_id, {job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING})
    inst = world.wait_at_slurm(job_id, {AttemptState.PENDING})
    status = world.slurm.status(inst.backend_id)
    assert status.state is AttemptState.PENDING and "PENDING" in status.message
    time.sleep(1.0)
    job = world.get(job_id)
    assert job.state == job_pb2.JOB_STATE_PROVISIONING and job.site == SITE


def test_full_partition_short_max_wait_is_not_sent_long_one_is(world: OnPrem) -> None:
    full = world.submit(spec("fill", "sleep 300", gpus=4, runtime_s=600))  # time limit 15 min
    world.wait(full, {job_pb2.JOB_STATE_RUNNING})
    assert world.free("a800") == 0
    short = world.submit(spec("hurry", "echo short", gpus=1, max_wait_s=60))
    patient = world.submit(spec("patient", "echo long", gpus=1, max_wait_s=7200))
    # the patient job is sent to Slurm's queue and pends there
    world.wait(patient, {job_pb2.JOB_STATE_PROVISIONING})
    assert world.wait_at_slurm(patient, {AttemptState.PENDING}).state is AttemptState.PENDING
    # the hurried one stays in the broker's queue, with a waiting event saying why
    time.sleep(1.5)
    assert world.get(short).state == job_pb2.JOB_STATE_QUEUED
    assert world.at_slurm(short) is None
    waiting = [e for e in world.events(short, until=has("waiting")) if e.kind == "waiting"]
    assert waiting, "no waiting event"
    data = json_format.MessageToDict(waiting[-1].data)
    assert "exceeds max_wait" in waiting[-1].message and "no cloud offer" in waiting[-1].message
    assert data["onprem_expected_wait_s"] > 60 and data["action"] == "wait"


def _kill_slurmrestd(cluster: SlurmCluster) -> None:
    assert cluster.rest_pidfile is not None and cluster.rest_pidfile.exists(), "no slurmrestd pid file"
    pid = int(cluster.rest_pidfile.read_text().strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_slurmrestd_killed_mid_run_broker_survives_and_reconciles(
    world: OnPrem, slurm_cluster: SlurmCluster
) -> None:
    if slurm_cluster.rest_pidfile is None or os.geteuid() != 0:
        pytest.skip("needs the cluster's pid files and root to kill and restart slurmrestd")
    job_id = world.submit(spec("survivor", "echo begin; sleep 6; echo end of run", gpus=1))
    world.wait(job_id, {job_pb2.JOB_STATE_RUNNING})
    _kill_slurmrestd(slurm_cluster)
    try:
        # the broker serves on: health, reads, submits, status
        with grpc.insecure_channel(world.broker.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
            health = stub.Check(health_pb2.HealthCheckRequest(service=""))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert world.get(job_id).state == job_pb2.JOB_STATE_RUNNING
        during = world.submit(spec("during", "echo submitted during the outage", gpus=1))
        status = world.stub.GetStatus(pb.GetStatusRequest(), metadata=auth())
        unhealthy = json.loads(status.status_json)["unhealthy"]
        assert SITE in unhealthy and "capacity unavailable" in unhealthy[SITE]
        time.sleep(8)  # the Slurm job ends while slurmrestd is down
        assert world.get(job_id).state == job_pb2.JOB_STATE_RUNNING  # nothing decided blindly
        assert world.get(during).state == job_pb2.JOB_STATE_QUEUED
        history = world.events(during, until=has("waiting", "unhealthy"))
        assert any("unhealthy" in e.message for e in history if e.kind == "waiting")
        assert world.broker.proc is not None and world.broker.proc.poll() is None
    finally:
        slurm_cluster.restart()  # scripts/slurm-cluster.sh start: only slurmrestd is missing
    job = world.wait(job_id, TERMINAL, timeout=60)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert "end of run" in job.log_tail and job.exit_code == 0
    assert world.wait(during, TERMINAL, timeout=60).state == job_pb2.JOB_STATE_SUCCEEDED
    status = world.stub.GetStatus(pb.GetStatusRequest(), metadata=auth())
    assert SITE not in json.loads(status.status_json)["unhealthy"]


def test_a_job_no_node_has_the_memory_for_fails_alone_and_blocks_no_one(world: OnPrem) -> None:
    """Slurm refuses a job asking more memory than any node of the partition has (the policy
    does not say the nodes' memory): that job fails with the reason, and the partition stays
    open to every other job (it was blocked for the broker's lifetime, and the job queued on)."""
    big = spec("too-much-memory", "echo never", gpus=1)
    big.resources.memory_gb = 4096  # the test nodes have under 10 GB
    big_id = world.submit(big)
    job = world.wait(big_id, TERMINAL, timeout=120)
    assert job.state == job_pb2.JOB_STATE_FAILED, job.message
    assert "memory" in job.message and "4194304 MB" in job.message, job.message
    fits = world.submit(spec("fits", "echo fits on a800", gpus=1))
    job = world.wait(fits, TERMINAL, timeout=120)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert "fits on a800" in job.log_tail


def test_a_job_stopped_at_its_time_limit_says_so(world: OnPrem) -> None:
    """Slurm's time limit is the broker's (runtime estimate x time_limit_factor): a job killed
    there is told so, not only given SIGTERM's exit code 143 like any other failure."""
    job_id = world.submit(spec("overruns", "echo start; sleep 600", gpus=1, runtime_s=20))
    job = world.wait(job_id, TERMINAL, timeout=180)
    assert job.state == job_pb2.JOB_STATE_FAILED, job.message
    assert job.message.startswith(f"exit code {job.exit_code}"), job.message
    assert "TIMEOUT" in job.message and "time limit of 1 min" in job.message, job.message
    assert "runtime_estimate" in job.message, job.message


def _scontrol(cluster: SlurmCluster, *args: str) -> None:
    import subprocess

    subprocess.run(["scontrol", *args], env={**os.environ, **cluster.env}, capture_output=True,
                   timeout=30, check=False)


def test_a_job_longer_than_the_partitions_max_time_fails_alone_and_blocks_no_one(
    world: OnPrem, slurm_cluster: SlurmCluster
) -> None:
    """Slurm refuses a job whose time limit (runtime estimate x 1.5) is over the partition's
    MaxTime: that job fails saying so, and the partition still takes shorter jobs."""
    _scontrol(slurm_cluster, "update", "partitionname=ascend", "maxtime=60")
    try:
        long_id = world.submit(spec("too-long", "echo never", gpus=1, accelerator="Ascend910B",
                                    runtime_s=50 * 60))
        job = world.wait(long_id, TERMINAL, timeout=120)
        assert job.state == job_pb2.JOB_STATE_FAILED, job.message
        assert "time limit of 75 min" in job.message and "60 min" in job.message, job.message
        short = world.submit(spec("short", "echo fits on ascend", gpus=1, accelerator="Ascend910B"))
        job = world.wait(short, TERMINAL, timeout=120)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    finally:
        _scontrol(slurm_cluster, "update", "partitionname=ascend", "maxtime=infinite")


def test_a_node_failure_is_the_brokers_to_retry_not_slurms(
    world: OnPrem, slurm_cluster: SlurmCluster
) -> None:
    """A node going down under a running job: the broker sees NODE_FAIL, counts the attempt lost
    and runs the job again itself (Slurm must not requeue it unseen while the broker says RUNNING)."""
    script = 'case "$SZB_ATTEMPT_ID" in *-a1) echo first; sleep 600;; esac; echo ran again'
    job_id = world.submit(spec("node-fail", script, gpus=1, runtime_s=900))
    world.wait(job_id, {job_pb2.JOB_STATE_RUNNING})
    first = world.wait_at_slurm(job_id, {AttemptState.RUNNING})
    try:
        _scontrol(slurm_cluster, "update", "nodename=szb-a800", "state=down", "reason=szb-test-node-fail")
        # Slurm marks the node down, then a broker poll sees NODE_FAIL: minutes on a loaded box.
        deadline = time.monotonic() + 120
        while not any(e.kind == "lost" for e in world.events(job_id, seconds=0.5)):
            assert time.monotonic() < deadline, (
                f"no lost attempt: broker says {state_from_proto(world.get(job_id).state)}, "
                f"Slurm says {world.slurm.status(first.backend_id)}")
    finally:
        _scontrol(slurm_cluster, "update", "nodename=szb-a800", "state=resume")
        slurm_cluster.wait_usable()  # (the next test's submit would be refused while it is not)
    lost = next(e for e in world.events(job_id, until=has("lost")) if e.kind == "lost")
    assert "NODE_FAIL" in lost.message
    job = world.wait(job_id, TERMINAL, timeout=90)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert job.attempts == 2 and "ran again" in job.log_tail


def test_szb_logs_follows_a_slurm_job_output(world: OnPrem) -> None:
    """`szb logs --follow` streams the Slurm job's output file while it runs, then ends."""
    import subprocess
    import sys

    from tests.brokerproc import ROOT
    from tests.slurm.onprem import TOKENS

    job_id = world.submit(spec("logs", "for i in 1 2 3; do echo slurm-line-$i; sleep 1; done", gpus=1))
    env = {**os.environ, "SZB_SERVER": world.broker.address, "SZB_TOKEN": TOKENS["team-a"],
           "GRPC_VERBOSITY": "ERROR"}
    followed = subprocess.run([sys.executable, "-m", "broker.cli", "logs", job_id, "--follow"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=90)
    assert followed.returncode == 0, followed.stderr
    assert [line for line in followed.stdout.splitlines() if line.startswith("slurm-line-")] == [
        "slurm-line-1", "slurm-line-2", "slurm-line-3"]
    assert world.get(job_id).state == job_pb2.JOB_STATE_SUCCEEDED
    tail = subprocess.run([sys.executable, "-m", "broker.cli", "logs", job_id, "--tail", "13"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=30)
    assert tail.stdout == "slurm-line-3\n", tail.stdout


def test_an_image_job_is_refused_where_no_container_runtime_is_configured_and_blocks_no_one(
    world: OnPrem,
) -> None:
    """The test site configures no container_runtime, so it cannot run a job's image: such a job
    is refused at submission with that reason (no site can run it). It was placed there, its
    launch failed, the partition was blocked for every job for the broker's lifetime ("blocked
    after a capacity error"), and the image job waited on with nowhere to go."""
    with_image = spec("with-image", "echo never", gpus=1)
    with_image.image = "registry.example.cn/lab/pytorch:2.1"
    with pytest.raises(grpc.RpcError) as refused:
        world.submit(with_image)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    assert "container image" in (refused.value.details() or ""), refused.value.details()
    assert "no container_runtime configured" in (refused.value.details() or ""), refused.value.details()
    plain = world.submit(spec("plain", "echo plain on a800", gpus=1))
    job = world.wait(plain, TERMINAL, timeout=120)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.message
    assert "plain on a800" in job.log_tail


def _szb_status(world: OnPrem) -> str:
    import subprocess
    import sys

    from tests.brokerproc import ROOT
    from tests.slurm.onprem import TOKENS

    env = {**os.environ, "SZB_SERVER": world.broker.address, "SZB_TOKEN": TOKENS["team-a"],
           "GRPC_VERBOSITY": "ERROR", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "broker.cli", "status"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_status_makes_up_no_free_capacity_while_slurmrestd_is_down(
    world: OnPrem, slurm_cluster: SlurmCluster
) -> None:
    """While slurmrestd is down the broker knows neither the free GPUs nor the waits: szb status
    said a800 "4/4" free with an expected wait of "0 min" (the policy's size, as if idle) while a
    job held one of them. It says they are unknown, and GetStatus flags the partition."""
    if slurm_cluster.rest_pidfile is None or os.geteuid() != 0:
        pytest.skip("needs the cluster's pid files and root to kill and restart slurmrestd")
    job_id = world.submit(spec("holder", "echo holding; sleep 60", gpus=1, runtime_s=300))
    world.wait(job_id, {job_pb2.JOB_STATE_RUNNING})
    _kill_slurmrestd(slurm_cluster)
    try:
        deadline = time.monotonic() + 20
        while SITE not in world.stub.GetStatus(pb.GetStatusRequest(), metadata=auth()).unhealthy_sites:
            assert time.monotonic() < deadline, "the site never turned unhealthy"
            time.sleep(0.2)
        row = next(line for line in _szb_status(world).splitlines() if " a800 " in line)
        assert "4/4" not in row and "?/4" in row and "unknown" in row, row
        status = world.stub.GetStatus(pb.GetStatusRequest(), metadata=auth())
        a800 = next(p for p in status.partitions if p.partition == "a800")
        assert a800.capacity_unknown and a800.free == 0, a800
    finally:
        slurm_cluster.restart()
    world.cancel(job_id)
    world.wait(job_id, TERMINAL, timeout=60)
    deadline = time.monotonic() + 20
    while True:  # once slurmrestd answers again, the partition is read as before
        status = world.stub.GetStatus(pb.GetStatusRequest(), metadata=auth())
        a800 = next(p for p in status.partitions if p.partition == "a800")
        if not a800.capacity_unknown and a800.free == 4:
            break
        assert time.monotonic() < deadline, a800
        time.sleep(0.2)
