"""The Slurm adapter against the real daemons (scripts/slurm-cluster.sh): no mocks."""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.base import AuthError, ConfigError, RequestError, TransientError, UnsupportedError
from adapters.slurm import SLURM_ERRORS, SLURM_STATES, SlurmAdapter, error_for
from adapters.slurm._script import output_file, started_file, submit_body
from broker.model import AttemptState
from tests.slurm.conftest import SITE, SlurmCluster, Tracker, launch

pytestmark = pytest.mark.slurm

TERMINAL = {s for s in AttemptState if s.terminal}


def now() -> datetime:
    return datetime.now(UTC)


def free_of(tracker: Tracker, partition: str) -> int:
    part = next(p for p in tracker.adapter.capacity(now()).partitions if p.name == partition)
    return part.free


def wait_idle(tracker: Tracker, partition: str) -> None:
    """The partition is idle: work an earlier test's broker cancelled at its end can take a while
    to go (a preempted job stops at its cut limit; a loaded slurmctld is slow), and a test that
    reads the partition's whole running work needs it gone."""
    wait_for_free(tracker, partition, 4, timeout=180)


def wait_for_free(tracker: Tracker, partition: str, expected: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while free_of(tracker, partition) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{partition}: free {free_of(tracker, partition)} != {expected}")
        time.sleep(0.25)


def test_detects_api_version_and_reports_partitions(slurm: Tracker) -> None:
    assert slurm.adapter.api_version == "v0.0.38"
    snap = slurm.adapter.capacity(now())
    by_name = {p.name: p for p in snap.partitions}
    assert by_name["ascend"].accelerator == "Ascend910B"
    assert by_name["a800"].accelerator == "A800"
    assert by_name["ascend"].total == 4
    assert by_name["a800"].total == 4
    offers = {o.instance_type: o for o in slurm.adapter.offers(now())}
    assert offers["a800"].accelerator == "A800" and offers["a800"].count == 4
    assert offers["ascend"].accelerator == "Ascend910B" and offers["ascend"].cpus > 0
    assert slurm.adapter.healthy


def test_job_succeeds_with_output_tail(slurm: Tracker) -> None:
    # the project's own interpreter, as real broker agents would run
    code = ("import os, sys; "
            "print('hello from', os.environ['SZB_JOB_ID'], os.environ['GREETING'], sys.version_info[0])")
    req = launch((sys.executable, "-c", code), env={"GREETING": "ni hao"})
    backend_id = slurm.submit(req)
    status = slurm.wait(backend_id, TERMINAL)
    assert status.state is AttemptState.SUCCEEDED, status
    assert status.exit_code == 0
    assert f"hello from {req.job_id} ni hao 3" in status.log_tail
    assert output_file(slurm.adapter.settings, req.token, backend_id).exists()
    # The job's own word of which Slurm job ran it (`adapters.slurm._script.started_file`).
    assert started_file(slurm.adapter.settings, req.token).read_text().strip() == backend_id


def test_agent_secret_reaches_the_job_env_only(slurm: Tracker) -> None:
    """The secret travels in the slurmrestd job environment: not in the comment, file names or script."""
    secret = secrets.token_urlsafe(32)
    req = launch(("/bin/sh", "-c", 'echo "secret=$SZB_AGENT_TOKEN"'), partition="ascend")
    req = req.model_copy(update={"agent_token": secret, "agent_endpoint": "http://127.0.0.1:9"})
    backend_id = slurm.submit(req)
    status = slurm.wait(backend_id, TERMINAL)
    assert status.state is AttemptState.SUCCEEDED, status
    assert f"secret={secret}" in status.log_tail  # the job got it, through its environment
    [job] = slurm.adapter.rest.request("GET", f"job/{backend_id}")["jobs"]
    assert secret not in json.dumps(job)  # comment, name, output path, everything slurmrestd shows
    assert req.token in str(job.get("comment"))  # the token stays: it names, it grants nothing
    files = [p.name for p in slurm.adapter.output_dir.iterdir()]
    assert files and not any(secret in name for name in files)
    body = submit_body(req, slurm.adapter.partitions["ascend"], slurm.adapter.settings,
                       api_version=slurm.adapter.api_version, gres_type=None)
    assert secret not in body["script"] and secret not in json.dumps(body["job"].get("comment"))


def test_failing_job_keeps_exit_code(slurm: Tracker) -> None:
    backend_id = slurm.submit(launch(("/bin/sh", "-c", "echo going down; exit 3"), partition="ascend"))
    status = slurm.wait(backend_id, TERMINAL)
    assert status.state is AttemptState.FAILED
    assert status.exit_code == 3
    assert "going down" in status.log_tail


def test_cancel_running_job(slurm: Tracker) -> None:
    req = launch(("/bin/sh", "-c", "echo started; sleep 300"))
    backend_id = slurm.submit(req)
    slurm.wait(backend_id, {AttemptState.RUNNING})
    slurm.adapter.cancel(backend_id, req.token)
    status = slurm.wait(backend_id, TERMINAL, timeout=30)
    assert status.state is AttemptState.CANCELLED
    slurm.adapter.cancel(backend_id, req.token)  # a second call is a no-op
    slurm.adapter.cancel("999999", req.token)  # so is cancelling a job Slurm never had
    owned = {o.backend_id: o for o in slurm.adapter.list_owned()}
    assert owned[backend_id].token == req.token
    assert owned[backend_id].job_id == req.job_id
    assert owned[backend_id].attempt_id == req.attempt_id
    assert owned[backend_id].state is AttemptState.CANCELLED


def test_a_job_cancelled_while_pending_has_no_exit_code(slurm: Tracker) -> None:
    """It never ran: Slurm's exit code 0 for it is no exit code of the job's (a caller reading
    `exit_code == 0` must not take it for a success)."""
    wait_idle(slurm, "a800")
    holder = slurm.submit(launch(("/bin/sleep", "300"), gpus=4))
    slurm.wait(holder, {AttemptState.RUNNING})
    req = launch(("/bin/true",), gpus=4)
    pending = slurm.submit(req)
    assert slurm.adapter.status(pending).state is AttemptState.PENDING
    slurm.adapter.cancel(pending, req.token)
    status = slurm.wait(pending, TERMINAL, timeout=30)
    assert status.state is AttemptState.CANCELLED and status.started_at is None
    assert status.exit_code is None, status


def test_capacity_per_partition(slurm: Tracker) -> None:
    wait_idle(slurm, "a800")
    ascend_before = free_of(slurm, "ascend")
    a800_before = free_of(slurm, "a800")
    backend_id = slurm.submit(launch(("sleep", "300"), gpus=2))
    slurm.wait(backend_id, {AttemptState.RUNNING})
    wait_for_free(slurm, "a800", a800_before - 2)
    reading = slurm.adapter.capacity(now())
    assert reading.started == (backend_id,)  # this broker's jobs Slurm runs, as read
    snap = {p.name: p for p in reading.partitions}
    assert snap["a800"].total == 4 and snap["a800"].free == a800_before - 2
    assert snap["ascend"].free == ascend_before  # the other partition's GPUs are distinct
    # 2 GPUs x a 3-minute limit (2m estimate x 1.5), a little of it already used
    assert 0.09 < snap["a800"].running_accelerator_hours_left <= 0.1
    offers = {o.instance_type: o for o in slurm.adapter.offers(now())}
    assert offers["a800"].free == a800_before - 2
    assert offers["a800"].expected_wait_s == 0  # a 1-GPU job still fits


def test_job_larger_than_free_capacity_pends_with_sane_wait(slurm: Tracker) -> None:
    wait_idle(slurm, "a800")
    runtime = timedelta(minutes=2)  # time limit 3 minutes
    limit_s = 180
    before = now()  # the running job's limit ends no earlier than this + limit_s
    busy = slurm.submit(launch(("sleep", "300"), gpus=4, runtime=runtime))
    slurm.wait(busy, {AttemptState.RUNNING})
    queued = slurm.submit(launch(("sleep", "300"), gpus=4, runtime=runtime))
    time.sleep(1)
    status = slurm.adapter.status(queued)
    assert status.state is AttemptState.PENDING
    # Slurm's backfill pass gives the queued job an expected start (bf_interval=1)
    deadline = time.monotonic() + 20
    while "expected start" not in status.message:
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
        status = slurm.adapter.status(queued)
    snap = {p.name: p for p in slurm.adapter.capacity(now()).partitions}
    assert snap["a800"].free == 0
    assert snap["a800"].queued_jobs >= 1
    assert snap["a800"].queued_accelerator_hours == pytest.approx(4 * limit_s / 3600)
    # a new 4-GPU job waits for the running one's limit plus the queued one's, less what the
    # running one has run by `t` (one instant for every read below: each read is a slurmrestd
    # round trip, seconds apart on a loaded box, and the waits shrink as the clock moves)
    t = now()
    wait4 = slurm.adapter.expected_wait_s("a800", 4, t)
    ran_s = (t - before).total_seconds()
    assert wait4 is not None and 2 * limit_s - ran_s - 5 <= wait4 <= 2 * limit_s + 5, (wait4, ran_s)
    # even a 1-GPU job queues behind the pending 4-GPU job (FIFO, no backfill credit)
    wait1 = slurm.adapter.expected_wait_s("a800", 1, t)
    assert wait1 is not None and 0 < wait1 <= wait4
    offers = {o.instance_type: o for o in slurm.adapter.offers(t)}
    assert offers["a800"].free == 0 and offers["a800"].expected_wait_s == pytest.approx(wait1, abs=5)
    # the other partition is unaffected
    assert slurm.adapter.expected_wait_s("ascend", 4, t) == 0
    assert offers["ascend"].expected_wait_s == 0
    # and a job larger than the partition can never start
    assert slurm.adapter.expected_wait_s("a800", 5, t) is None


def test_idempotent_resubmit_returns_same_job(slurm: Tracker, tmp_path: Path) -> None:
    req = launch(("sleep", "30"))
    first = slurm.submit(req)
    assert slurm.submit(req) == first
    # a fresh adapter (broker restart) whose marker only records the intent (the broker died
    # between slurmrestd's reply and writing the job id) finds it through the job comment
    marker = slurm.adapter.output_dir / f"{req.token}.jobid"
    marker.write_text("")
    fresh = slurm.make()
    assert fresh.submit(req) == first
    # Found, not resubmitted, and written down: once slurmctld forgets the job (MinJobAge), a
    # restarted broker's status still finds its token (and its recorded exit code), with the uid
    # it runs as (only that user's files are believed: `adapters.slurm._owned`).
    assert marker.read_text().split() == [first, str(pwd.getpwnam(slurm.cluster.user).pw_uid)]
    # and one that kept its output dir finds the marker even without asking slurmctld
    again = slurm.make()
    assert again.submit(req) == first
    assert [o.backend_id for o in again.list_owned()] == [first]


def test_slurmrestd_down_is_transient_then_recovers(slurm: Tracker, slurm_cluster: SlurmCluster) -> None:
    if slurm_cluster.rest_pidfile is None or not slurm_cluster.rest_pidfile.exists():
        pytest.fail("this test needs the cluster from scripts/slurm-cluster.sh (SZB_SLURM_DIR)")
    slurm.adapter.ping()
    assert slurm.adapter.healthy
    pid = int(slurm_cluster.rest_pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60  # slurmrestd's exit; more than 10 s on a loaded box
    while True:
        try:
            slurm.adapter.capacity(now())
        except TransientError as exc:
            assert exc.code in ("Unreachable", "Timeout")
            break
        assert time.monotonic() < deadline, "slurmrestd still answering after SIGTERM"
        time.sleep(0.2)
    assert not slurm.adapter.healthy
    assert slurm.adapter.last_error
    with pytest.raises(TransientError):
        slurm.adapter.submit(launch(("true",)))
    with pytest.raises(TransientError):
        slurm.adapter.status("1")
    slurm_cluster.restart()
    slurm.adapter.ping()
    assert slurm.adapter.healthy
    backend_id = slurm.submit(launch(("true",)))
    assert slurm.wait(backend_id, TERMINAL).state is AttemptState.SUCCEEDED


def test_unknown_partition_and_gres_are_config_or_unsupported(slurm: Tracker) -> None:
    # a partition Slurm does not have
    bad_partition = slurm.make(partitions={"nope": "A800"})
    with pytest.raises(ConfigError) as info:
        bad_partition.submit(launch(("true",)))
    assert info.value.code == "ESLURM_INVALID_PARTITION_NAME"
    # a gres type the partition's nodes do not carry
    bad_gres = slurm.make(partitions={"a800": {"accelerator": "A800", "gres_type": "h100"}})
    with pytest.raises(UnsupportedError) as info2:
        bad_gres.submit(launch(("true",)))
    assert info2.value.code == "ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE"
    # more GPUs than a node has: the job's own refusal (it fails alone), not the partition's
    with pytest.raises(RequestError) as info3:
        slurm.adapter.submit(launch(("true",), gpus=5))
    assert "5 a800 GPUs per node" in info3.value.message and "has 4" in info3.value.message
    # an accelerator this site has no partition for
    req = launch(("true",))
    h100 = req.model_copy(update={"offer": req.offer.model_copy(
        update={"instance_type": "h100", "accelerator": "H100"})})
    with pytest.raises(UnsupportedError):
        slurm.adapter.submit(h100)
    # images without a container runtime
    img = req.model_copy(update={"spec": req.spec.model_copy(update={"image": "docker://busybox"})})
    with pytest.raises(UnsupportedError):
        slurm.adapter.submit(img)
    # Slurm records a job for a submit it rejects (2014) and fails it at once; nothing runs
    assert all(o.state is AttemptState.FAILED for o in slurm.adapter.list_owned())


def test_container_runtime_prefix(slurm: Tracker) -> None:
    # a stand-in runtime that just shows what it was asked to run
    adapter = slurm.make(container_runtime="/bin/echo runtime-exec")
    req = launch(("python3", "-c", "print('x y')"))
    req = req.model_copy(update={"spec": req.spec.model_copy(update={"image": "docker://img:1"})})
    backend_id = slurm.submit(req, adapter)
    status = slurm.wait(backend_id, TERMINAL)
    assert status.state is AttemptState.SUCCEEDED
    assert "runtime-exec docker://img:1 python3 -c print('x y')" in status.log_tail


def test_token_from_scontrol_and_expired_token(slurm: Tracker, slurm_cluster: SlurmCluster) -> None:
    conf = slurm_cluster.env.get("SLURM_CONF")
    assert conf, "SLURM_CONF missing from the cluster env"
    own = slurm.make(token=None, slurm_conf=conf)
    assert own.capacity(now()).partitions
    short = own.rest._scontrol_token()  # a real token, then let it expire
    out = subprocess.run(["scontrol", "token", f"username={slurm_cluster.user}", "lifespan=1"],
                         capture_output=True, text=True, env={"SLURM_CONF": conf, "PATH": "/usr/bin:/bin"},
                         check=True)
    expiring = out.stdout.strip().removeprefix("SLURM_JWT=")
    assert short and expiring
    time.sleep(2.5)
    stale = slurm.make(token=expiring)
    with pytest.raises(AuthError):
        stale.capacity(now())


def test_error_table_codes_are_real_slurm_codes() -> None:
    """Every code in the table is one libslurm knows (its strerror is not 'Unknown error')."""
    lib = ctypes.CDLL("/usr/lib/x86_64-linux-gnu/slurm-wlm/libslurmfull.so")
    strerror = lib.slurm_strerror
    strerror.restype = ctypes.c_char_p
    strerror.argtypes = [ctypes.c_int]
    for code in SLURM_ERRORS:
        if code == -1:
            continue
        text = strerror(code).decode()
        assert text and "Unknown error" not in text, code
        assert isinstance(error_for(str(SITE), code, text), SLURM_ERRORS[code][1])


def test_every_slurm_job_state_is_mapped() -> None:
    """Every state name libslurm can print (base states and flags) has an attempt state."""
    lib = ctypes.CDLL("/usr/lib/x86_64-linux-gnu/slurm-wlm/libslurmfull.so")
    name = lib.slurm_job_state_string
    name.restype = ctypes.c_char_p
    name.argtypes = [ctypes.c_uint32]
    names = {name(i).decode() for i in range(16)} | {name(1 << bit).decode() for bit in range(8, 32)}
    names.discard("?")
    assert len(names) >= 20
    assert names <= set(SLURM_STATES), names - set(SLURM_STATES)


def test_adapter_is_usable_through_the_registry(slurm_cluster: SlurmCluster) -> None:
    from adapters.registry import AdapterRegistry

    registry = AdapterRegistry.discover()
    adapter = registry.create("slurm", SITE, {"url": slurm_cluster.url, "token": slurm_cluster.token,
                                              "user": slurm_cluster.user, "partitions": {"a800": "A800"}})
    assert isinstance(adapter, SlurmAdapter)
    assert adapter.capacity(now()) is not None


def test_a_partition_the_cluster_lacks_as_configured_is_logged_once(
    slurm: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy partition Slurm has no nodes for, or whose nodes carry another gres type than the
    site counts, reads 0 of 0 for good and its jobs wait ("on-prem wait ∞ min exceeds max_wait")
    with nothing anywhere saying why. The adapter logs each such mismatch once, with what to fix."""
    adapter = slurm.make(partitions={"h800": "H800", "ascend": "Ascend910B",
                                     "a800": {"accelerator": "A800", "gres_type": "nvidia_a800"}})
    now = datetime.now(UTC)
    with caplog.at_level("WARNING", logger="adapters.slurm"):
        for i in range(3):  # the broker reads capacity every pass
            snap = adapter.capacity(now + timedelta(seconds=i))
    assert {p.name: p.total for p in snap.partitions} == {"h800": 0, "ascend": 4, "a800": 0}
    told = [r.getMessage() for r in caplog.records if "partition" in r.getMessage()]
    assert len(told) == 2, told
    assert any("partition h800 has no nodes in Slurm" in m for m in told), told
    assert any("partition a800's nodes carry gres gpu:a800, not gpu:nvidia_a800" in m for m in told), told


def test_slurmctld_down_says_so(slurm: Tracker, slurm_cluster: SlurmCluster) -> None:
    """With slurmctld down, slurmrestd still answers, with Slurm's bare error -1: the site was
    unhealthy with "SLURM_ERROR: GET nodes: Unspecified error (slurm error -1)", which names
    neither daemon. The error says what -1 means here: slurmctld unreachable (or the JWT refused)."""
    if slurm_cluster.rest_pidfile is None or not slurm_cluster.rest_pidfile.exists():
        pytest.fail("this test needs the cluster from scripts/slurm-cluster.sh (SZB_SLURM_DIR)")
    ctld_pidfile = slurm_cluster.rest_pidfile.parent / "slurmctld.pid"
    adapter = slurm.make(timeout_s=30)  # slurmrestd answers after its own ~10 s try of slurmctld
    adapter.ping()
    os.kill(int(ctld_pidfile.read_text()), signal.SIGTERM)
    try:
        deadline = time.monotonic() + 30
        error: TransientError | None = None
        while error is None or error.code != "SLURM_ERROR":
            assert time.monotonic() < deadline, f"slurmrestd still reads nodes without slurmctld: {error}"
            time.sleep(0.5)
            try:
                adapter.capacity(now())
            except TransientError as exc:
                error = exc
        assert "slurmctld" in error.message and "JWT" in error.message, error.message
        assert "slurmctld" in adapter.last_error, adapter.last_error
    finally:
        slurm_cluster.restart()
    adapter.ping()
