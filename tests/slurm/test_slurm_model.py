"""Pure parts of the Slurm adapter: wait model, parsers, tables (no cluster needed)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import (
    AdapterError,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    TransientError,
    UnsupportedError,
)
from adapters.slurm import (
    SLURM_ERRORS,
    SLURM_STATES,
    SUPPORTED_API_VERSIONS,
    PendingWork,
    RunningWork,
    SlurmAdapter,
    decode_exit_code,
    decode_marks,
    encode_marks,
    error_for,
    estimate_wait_s,
    job_gpus,
    job_state_name,
    parse_gres,
    slurm_number,
)
from adapters.slurm._records import job_status
from adapters.slurm._script import (
    JOB_ID_SLOT,
    ScriptSettings,
    exit_code_file,
    name_failed_rank,
    output_file,
    rank_exit_file,
    shell_word,
)
from adapters.slurm._stop import grace_update, stopping
from broker.model import (
    AcceleratorRequest,
    AttemptId,
    AttemptState,
    JobId,
    JobSpec,
    LaunchRequest,
    Offer,
    Resources,
    SiteId,
)

# --------------------------------------------------------------------------- wait model


def test_no_wait_when_it_fits_and_nothing_queued() -> None:
    assert estimate_wait_s(4, 4, 4, []) == 0
    assert estimate_wait_s(4, 1, 1, [RunningWork(3, 600)]) == 0


def test_never_when_larger_than_partition() -> None:
    assert estimate_wait_s(4, 4, 5, []) is None
    assert estimate_wait_s(0, 0, 1, []) is None


def test_cpu_only_jobs_do_not_wait() -> None:
    assert estimate_wait_s(4, 0, 0, [RunningWork(4, 600)]) == 0


def test_release_time_without_queue_is_exact() -> None:
    running = [RunningWork(2, 100), RunningWork(2, 1000)]
    assert estimate_wait_s(4, 0, 2, running) == 100
    assert estimate_wait_s(4, 0, 3, running) == 1000
    assert estimate_wait_s(4, 1, 2, [RunningWork(3, 300)]) == 300


def test_fluid_backlog_with_unestimated_queue() -> None:
    # running 4 GPUs x 300 s, queued 4 GPUs x 600 s -> 3600 GPU-s over 4 GPUs
    assert estimate_wait_s(4, 0, 1, [RunningWork(4, 300)], [PendingWork(4, 600)]) == 900
    # never less than the release time of the running jobs
    assert estimate_wait_s(8, 0, 8, [RunningWork(8, 1000)], [PendingWork(1, 60)]) == pytest.approx(
        max(1000.0, (8 * 1000 + 60) / 8))


def test_slurm_expected_starts_refine_the_estimate() -> None:
    # Slurm says the queued 4-GPU job starts in 300 s (when the running one ends); it holds
    # the partition 600 s more, so a new job needs 900 s whatever its size.
    running = [RunningWork(4, 300)]
    queued = [PendingWork(4, 600, expected_start_s=300)]
    assert estimate_wait_s(4, 0, 1, running, queued) == 900
    assert estimate_wait_s(4, 0, 4, running, queued) == 900
    # a queued 2-GPU job leaves room: a 2-GPU job can start when it has started
    queued2 = [PendingWork(2, 600, expected_start_s=300)]
    assert estimate_wait_s(4, 0, 2, running, queued2) == 300
    # estimated and unestimated queue: Slurm's part first, then the fluid backlog
    mixed = [PendingWork(4, 600, expected_start_s=300), PendingWork(4, 400)]
    assert estimate_wait_s(4, 0, 1, running, mixed) == 300 + (4 * 600 + 4 * 400) / 4


def test_wait_grows_with_queue_and_request() -> None:
    running = [RunningWork(2, 100), RunningWork(2, 500)]
    base = estimate_wait_s(4, 0, 2, running)
    more = estimate_wait_s(4, 0, 2, running, [PendingWork(2, 300)])
    assert base is not None and more is not None and more >= base
    assert (estimate_wait_s(4, 0, 4, running) or 0) >= (base or 0)


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(("text", "expected"), [
    ("gpu:a800:4", {"a800": 4}),
    ("gpu:a800:4(S:0-1)", {"a800": 4}),
    ("gpu:a800:4(IDX:0-3)", {"a800": 4}),
    ("gpu:ascend910b:0(IDX:N/A)", {"ascend910b": 0}),
    ("gpu:4", {None: 4}),
    ("gpu:(null):2", {None: 2}),
    ("gres:gpu:a800:4", {"a800": 4}),
    ("gres/gpu:a800=4", {"a800": 4}),
    ("gres/gpu=2", {None: 2}),
    ("gpu:a100:2(S:0,1),gpu:a800:1,mps:100", {"a100": 2, "a800": 1}),
    ("cpu=2,mem=1G,gres/gpu:h100=8", {"h100": 8}),
    ("", {}),
    (None, {}),
])
def test_parse_gres(text: Any, expected: dict[str | None, int]) -> None:
    assert parse_gres(text) == expected


def test_job_gpus() -> None:
    assert job_gpus({"tres_per_node": "gres:gpu:a800:4", "node_count": 2}) == 8
    assert job_gpus({"tres_per_job": "gres:gpu:3", "tres_per_node": "gres:gpu:1"}) == 3
    assert job_gpus({"tres_per_task": "gres:gpu:1", "tasks": 2}) == 2
    assert job_gpus({"tres_per_node": ""}) == 0


def test_exit_codes() -> None:
    assert decode_exit_code(0) == 0
    assert decode_exit_code(768) == 3  # wait status: 3 << 8
    assert decode_exit_code(9) == 137  # killed by SIGKILL
    assert decode_exit_code(None) is None
    # v0.0.39+ structure
    assert decode_exit_code({"status": ["EXITED"], "return_code": {"set": True, "number": 3}}) == 3
    assert decode_exit_code({"status": ["SIGNALED"], "signal": {"id": {"set": True, "number": 15}}}) == 143


def test_numbers_and_states() -> None:
    assert slurm_number(5) == 5
    assert slurm_number(4294967295) is None  # INFINITE
    assert slurm_number({"set": True, "infinite": False, "number": 7}) == 7
    assert slurm_number({"set": False, "number": 0}) is None
    assert slurm_number({"set": True, "infinite": True, "number": 0}) is None
    assert job_state_name({"job_state": "RUNNING"}) == "RUNNING"
    assert job_state_name({"job_state": ["PENDING", "REQUEUED"]}) == "PENDING"
    assert job_state_name({}) == "UNKNOWN"


def test_marks_round_trip() -> None:
    marks = {"broker": "b1", "job": "j;=%x", "attempt": "a 1", "token": "tok-1"}
    comment = encode_marks(marks)
    assert comment.startswith("szb:broker=b1;")
    assert decode_marks(comment) == marks
    assert decode_marks("user comment") == {}
    assert decode_marks(None) == {}


# --------------------------------------------------------------------------- tables


def test_every_listed_error_code_is_mapped() -> None:
    classes = {AdapterError, CapacityError, QuotaError, TransientError, AuthError, ConfigError,
               UnsupportedError, NotFoundError}
    names = [name for name, _ in SLURM_ERRORS.values()]
    assert len(names) == len(set(names)), "one name per code"
    for code, (name, cls) in SLURM_ERRORS.items():
        assert cls in classes, (code, cls)
        err = error_for("site", code, "boom")
        assert type(err) is cls
        assert err.code == name and str(code) in err.message


@pytest.mark.parametrize(("code", "cls"), [
    (2000, ConfigError),       # invalid partition
    (2014, UnsupportedError),  # node configuration unavailable (gres type / too many GPUs)
    (2072, ConfigError),       # invalid gres
    (2017, NotFoundError),     # invalid job id
    (2016, CapacityError),     # nodes busy
    (2050, QuotaError),        # accounting / QOS policy
    (2002, AuthError),         # access denied
    (1800, TransientError),    # slurmctld unreachable
    (-1, TransientError),      # 22.05: bad JWT or slurmctld down (indistinguishable)
    (5005, TransientError),    # zero bytes: slurmctld hung up (a JWT expired mid-run); a held-out review
])
def test_key_codes(code: int, cls: type[AdapterError]) -> None:
    assert isinstance(error_for("s", code, ""), cls)


def test_unknown_code_is_kept_as_plain_adapter_error() -> None:
    err = error_for("s", 4242, "odd")
    assert type(err) is AdapterError and err.code == "SLURM_4242"


def test_state_table_covers_terminal_and_live_states() -> None:
    assert SLURM_STATES["COMPLETED"] is AttemptState.SUCCEEDED
    assert SLURM_STATES["FAILED"] is AttemptState.FAILED
    assert SLURM_STATES["TIMEOUT"] is AttemptState.FAILED
    assert SLURM_STATES["OUT_OF_MEMORY"] is AttemptState.FAILED
    assert SLURM_STATES["CANCELLED"] is AttemptState.CANCELLED
    assert SLURM_STATES["PREEMPTED"] is AttemptState.PREEMPTED
    assert SLURM_STATES["NODE_FAIL"] is AttemptState.LOST
    assert SLURM_STATES["PENDING"] is AttemptState.PENDING
    assert SLURM_STATES["RUNNING"] is AttemptState.RUNNING


def test_a_job_slurm_stopped_carries_the_cause_a_plain_failure_none() -> None:
    from adapters.slurm._records import job_status

    def record(state: Any, **more: Any) -> dict[str, Any]:
        return {"job_state": state, "exit_code": 0, "time_limit": 90, **more}

    assert "time limit of 90 min" in job_status(record("TIMEOUT")).cause
    newer = record(["TIMEOUT"], time_limit={"set": True, "infinite": False, "number": 5})
    assert "time limit of 5 min" in job_status(newer).cause
    # (held-out review: an administrator's `scontrol update timelimit=1` was blamed on the estimate)
    set_by_broker = record("TIMEOUT", time_limit=15, comment="szb:broker=b;szb:limit=15")
    assert "runtime_estimate" in job_status(set_by_broker).cause
    changed = record("TIMEOUT", time_limit=1, comment="szb:broker=b;szb:limit=15")
    assert job_status(changed).cause == (
        "TIMEOUT: Slurm stopped it at its time limit of 1 min, changed in Slurm since the broker set 15 min"
    )
    assert "memory" in job_status(record("OUT_OF_MEMORY")).cause
    assert job_status(record("FAILED", exit_code=3 << 8)).cause == ""
    assert job_status(record("COMPLETED")).cause == ""
    unlaunched = job_status(record("FAILED", state_reason="JobLaunchFailure", exit_code=53), "check dirs")
    assert unlaunched.exit_code is None and unlaunched.cause.endswith("; check dirs")
    # Pending but not starting by itself: held or suspended (the job's reason says so).
    held = job_status(record("PENDING", state_reason="JobHeldAdmin", start_time=0))
    assert held.state is AttemptState.PENDING and "by an administrator (JobHeldAdmin)" in held.cause
    assert "by its user (JobHeldUser)" in job_status(record(["PENDING"], state_reason="JobHeldUser")).cause
    assert "suspended in Slurm" in job_status(record("SUSPENDED", state_reason="None")).cause
    assert job_status(record("PENDING", state_reason="Resources")).cause == ""
    assert job_status(record("PENDING", state_reason="Priority")).cause == ""
    # Held back by something other than its turn or free resources: a limit, a down partition.
    down = job_status(record("PENDING", state_reason="PartitionDown")).cause
    assert down.startswith("held back in Slurm (PartitionDown): its partition is down"), down
    assert "a limit of its QOS" in job_status(record("PENDING", state_reason="QOSMaxGRESPerUser")).cause
    assert "its Slurm account" in job_status(record("PENDING", state_reason="AssocGrpGRES")).cause
    assert "tenants[].batch.account" in job_status(record("PENDING", state_reason="InvalidAccount")).cause


def test_a_job_that_ran_says_when_slurm_started_it_one_that_never_ran_does_not() -> None:
    """Slurm gives a job cancelled while it pended a start time too (its end: seen on slurmrestd
    22.05), but never nodes; a pending job's start_time is when it is expected to start."""
    from adapters.slurm._records import job_status

    at = 1_796_314_876
    ran = {"job_state": "COMPLETED", "exit_code": 0, "start_time": at, "nodes": "szb-a800"}
    assert job_status(ran).started_at == datetime.fromtimestamp(at, UTC)
    assert job_status({**ran, "job_state": "RUNNING"}).started_at == datetime.fromtimestamp(at, UTC)
    assert job_status({**ran, "start_time": 0}).started_at is None
    pended = {"job_state": "CANCELLED", "exit_code": 0, "start_time": at, "end_time": at, "nodes": ""}
    assert job_status(pended).started_at is None
    assert job_status({**ran, "job_state": "PENDING", "state_reason": "Resources"}).started_at is None
    unlaunched = {**ran, "job_state": "FAILED", "state_reason": "JobLaunchFailure", "exit_code": 53}
    assert job_status(unlaunched).started_at is None  # its script never ran


def test_a_job_over_the_partitions_sizes_is_named_in_either_api_dialect() -> None:
    from adapters.slurm._refusals import too_large, too_long

    job = {"time_limit": 75, "memory_per_node": 65536, "cpus_per_task": 4}
    assert too_long("p", {"max_time_limit": 60}, job) is not None  # v0.0.38
    assert too_long("p", {"maximums": {"time": {"set": True, "infinite": False, "number": 60}}}, job)
    assert too_long("p", {"max_time_limit": -1}, job) is None  # INFINITE, as v0.0.38 prints it
    assert too_long("p", {"maximums": {"time": {"set": True, "infinite": True, "number": 0}}}, job) is None
    assert too_long("p", {"max_time_limit": 90}, job) is None
    node = {"real_memory": 9642, "cpus": 16, "partitions": ["p"]}
    assert "65536 MB" in (too_large("p", [node], job) or "")
    assert too_large("p", [node], {**job, "memory_per_node": 1024}) is None
    assert "20 CPUs" in (too_large("p", [node], {**job, "memory_per_node": 1, "cpus_per_task": 20}) or "")


# --------------------------------------------------------------------------- newer API dialects
# A stand-in slurmrestd (httpx.MockTransport) serving a newer API version: the adapter's own
# code runs unchanged, only the server is fake.


def _fake_rest(version: str, seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/openapi/v3":
            return httpx.Response(200, json={"paths": {f"/slurm/{v}/ping": {} for v in ("v0.0.39", version)}})
        if path == f"/slurm/{version}/jobs":
            return httpx.Response(200, json={"jobs": [], "errors": []})
        if path == f"/slurm/{version}/nodes":
            return httpx.Response(200, json={"errors": [], "nodes": [{
                "name": "n1", "state": ["MIXED"], "partitions": ["a800"], "cpus": 16,
                "real_memory": 65536, "gres": "gpu:a800:8", "gres_used": "gpu:a800:2(IDX:0-1)",
            }]})
        if path == f"/slurm/{version}/job/submit":
            return httpx.Response(200, json={"job_id": 77, "errors": []})
        if path == f"/slurm/{version}/job/77":
            return httpx.Response(200, json={"errors": [], "jobs": [{
                "job_id": 77, "job_state": ["FAILED"], "state_reason": "NonZeroExitCode",
                "comment": encode_marks({"broker": "shangzhuang", "token": "tok1"}),
                "exit_code": {"status": ["EXITED"], "return_code": {"set": True, "number": 4}},
            }]})
        if path == f"/slurm/{version}/job/78":
            return httpx.Response(500, json={"errors": [{"error_number": 2017, "error": "Invalid job id"}]})
        if path == f"/slurm/{version}/job/79":
            return httpx.Response(401, text="Authentication failure")
        return httpx.Response(404, text="Unable find requested URL")
    return handle


def _request() -> LaunchRequest:
    spec = JobSpec(name="x", command=("echo", "hi there"), runtime_estimate=timedelta(minutes=10),
                   env={"A": "1"},
                   resources=Resources(cpus=2, memory_gb=1.5,
                                       accelerators=AcceleratorRequest(count=2, any_of=("A800",))))
    offer = Offer(site=SiteId("s"), instance_type="a800", accelerator="A800", count=8, price_per_hour=1)
    return LaunchRequest(job_id=JobId("j1"), attempt_id=AttemptId("a1"), token="tok1", spec=spec, offer=offer)


def test_newer_api_version_is_detected_and_spoken(tmp_path: Any) -> None:
    assert SUPPORTED_API_VERSIONS[-1] == "v0.0.38" and "v0.0.40" in SUPPORTED_API_VERSIONS
    seen: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(_fake_rest("v0.0.40", seen)))
    adapter = SlurmAdapter(SiteId("s"), {"url": "http://slurm.test", "token": "t", "user": "alice",
                                         "partitions": {"a800": "A800"}, "output_dir": str(tmp_path)},
                           client=client)
    assert adapter.api_version == "v0.0.40"
    assert adapter.submit(_request()) == "77"
    submit = next(r for r in seen if r.url.path.endswith("/job/submit"))
    assert submit.headers["X-SLURM-USER-NAME"] == "alice" and submit.headers["X-SLURM-USER-TOKEN"] == "t"
    body = json.loads(submit.content)
    job = body["job"]
    assert "A=1" in job["environment"] and "SZB_JOB_ID=j1" in job["environment"]
    assert "SZB_ATTEMPT_NUMBER=1" in job["environment"]  # (no checkpoint: no interval)
    assert not any(v.startswith("SZB_CHECKPOINT_INTERVAL_S=") for v in job["environment"])
    assert job["tres_per_node"] == "gres/gpu:a800:2"
    assert job["partition"] == "a800" and job["cpus_per_task"] == 2 and job["memory_per_node"] == 1536
    assert job["time_limit"] == 15 and job["requeue"] is False
    # Slurm's StdOut (every user sees its name) is not the job's output, which its script makes
    assert job["standard_output"].endswith("/tok1.slurm.%j.out")
    own = shell_word(output_file(adapter.settings, "tok1", JOB_ID_SLOT))  # (the job's id: its own file)
    assert f"exec > {own} 2>&1" in body["script"] and own.endswith('"$SLURM_JOB_ID".out')
    assert decode_marks(job["comment"])["token"] == "tok1"
    assert "\necho 'hi there'\nrc=$?\n" in body["script"]
    assert f"> {shell_word(exit_code_file(adapter.settings, 'tok1', JOB_ID_SLOT))}.tmp" in body["script"]
    status = adapter.status("77")
    assert status.state is AttemptState.FAILED and status.exit_code == 4
    with pytest.raises(NotFoundError):
        adapter.status("78")
    with pytest.raises(AuthError):
        adapter.status("79")
    snap = adapter.capacity(datetime.now(UTC))
    assert snap.partitions[0].total == 8 and snap.partitions[0].free == 6
    assert adapter.healthy


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        SlurmAdapter(SiteId("s"), {"partitions": {"a800": "A800"}})
    with pytest.raises(ConfigError):
        SlurmAdapter(SiteId("s"), {"url": "http://x"})
    with pytest.raises(ConfigError):
        SlurmAdapter(SiteId("s"), {"url": "http://x", "partitions": {"a": "A800"}, "api_version": "v0.0.1"})


def test_the_slurm_user_is_required_and_never_defaults_to_root(tmp_path: Any) -> None:
    base = {"url": "http://x", "token": "t", "partitions": {"a": "A800"}, "output_dir": str(tmp_path)}
    for missing in ({}, {"user": ""}, {"user": "  "}):
        with pytest.raises(ConfigError) as info:
            SlurmAdapter(SiteId("s"), {**base, **missing})
        assert info.value.code == "MissingUser" and "user" in str(info.value)
    assert SlurmAdapter(SiteId("s"), {**base, "user": "alice"}).user == "alice"


def test_connection_refused_is_transient_and_unhealthy(tmp_path: Any) -> None:
    adapter = SlurmAdapter(SiteId("s"), {"url": "http://127.0.0.1:9", "token": "t", "timeout_s": 2,
                                         "user": "alice", "partitions": {"a800": "A800"},
                                         "output_dir": str(tmp_path)})
    with pytest.raises(TransientError) as info:
        adapter.status("1")
    assert info.value.code == "Unreachable"
    assert not adapter.healthy and adapter.last_error


def test_a_checkpointing_job_is_told_its_interval_and_attempt_in_its_slurm_environment() -> None:
    from pathlib import Path

    from adapters.slurm._script import ScriptSettings, job_environment
    from broker.jobspec import Checkpoint

    request = _request()
    spec = request.spec.model_copy(update={"checkpoint": Checkpoint(interval=timedelta(minutes=30))})
    settings = ScriptSettings("b", Path("/tmp"), "/tmp")
    env = job_environment(request.model_copy(update={"spec": spec, "attempt_number": 2}), settings)
    assert env["SZB_CHECKPOINT_INTERVAL_S"] == "1800" and env["SZB_ATTEMPT_NUMBER"] == "2"


def _gang_record(state: str, token: str) -> dict[str, Any]:
    return {"job_state": state, "state_reason": "None", "exit_code": 143 << 8, "node_count": 2,
            "time_limit": 1, "comment": encode_marks({"broker": "b", "token": token})}


@pytest.mark.parametrize(("state", "named"), [("FAILED", True), ("TIMEOUT", False), ("DEADLINE", False)])
def test_a_failed_gang_names_its_first_failed_rank_but_not_when_slurm_stopped_it(
    tmp_path: Path, state: str, named: bool
) -> None:
    # Rank 1 failed (3) and srun stopped rank 0 (143). At a time limit every rank is stopped
    # by Slurm: no rank is the cause, so none is named.
    settings = ScriptSettings(broker_id="b", output_dir=tmp_path, workdir="/tmp")
    for rank, code in ((1, 3), (0, 143)):
        path = rank_exit_file(settings, "tok", "1", rank)
        path.write_text(f"{code}\n")
        os.utime(path, ns=(10**9 * (rank == 0) + 1, 10**9 * (rank == 0) + 1))
    job = _gang_record(state, "tok")
    status = name_failed_rank(job_status(job), settings, job, os.geteuid())
    assert status.message.startswith("rank 1 of 2: ") is named
    assert status.exit_code == (3 if named else 143)


@pytest.mark.parametrize(("job", "now", "grace", "expected"), [
    # 100 s run + 20 s grace = 2 min, rounded up from 120 s
    ({"start_time": 1000, "time_limit": 15, "comment": "szb:broker=b"}, 1100, 20,
     {"time_limit": 2, "comment": "szb:broker=b;szb:stop=1120"}),
    ({"start_time": 1000, "time_limit": 15}, 1010, 30, {"time_limit": 1, "comment": "szb:stop=1060"}),
    # never later than the limit it has
    ({"start_time": 1000, "time_limit": 3}, 1150, 600, {"time_limit": 3, "comment": "szb:stop=1180"}),
    ({"start_time": 0, "time_limit": 15}, 1100, 20, None),  # pending: not started
])
def test_a_graceful_stop_cuts_the_time_limit_to_the_run_so_far_plus_the_grace(
    job: dict[str, Any], now: float, grace: float, expected: dict[str, Any] | None
) -> None:

    assert grace_update(job, now, grace) == expected
    if expected is not None:
        marks = {"stop": expected["comment"].rsplit("=", 1)[1]}
        assert stopping(marks, now) and not stopping(marks, now + 3600) and not stopping({}, now)


def test_a_failed_scontrol_token_is_one_line_naming_what_scontrol_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for the binary the broker runs (not the broker's code): it fails as scontrol
    # does without a reachable controller, over several lines. The broker logged them as they
    # came, one warning spread over many unformatted lines.
    from adapters.slurm._client import SlurmRest

    fake = tmp_path / "scontrol"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'scontrol: error: Unable to contact slurm controller (connect failure)' >&2\n"
        "echo '' >&2\n"
        "echo '  slurm_auth_g_create: no token' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    rest = SlurmRest("slurm-x", "http://127.0.0.1:9", token=None, client=httpx.Client())
    with pytest.raises(AuthError) as caught:
        rest._scontrol_token()
    message = str(caught.value.message)
    assert "\n" not in message
    assert message == (
        "scontrol token failed: scontrol: error: Unable to contact slurm controller (connect failure)"
        " | slurm_auth_g_create: no token"
    )
