"""Issue 12, obs. 7, 8 and 10 through the real CLI and gRPC against a running `szb serve`.

Ids are never cut, a waiting job says why in `szb list`, pages continue with
`--page-token`, a closed pipe ends quietly, typos get suggestions, errors carry stable
reasons, and a job shows where it ran, what it cost and when.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.serde_explain import explanation_from_proto
from tests.brokerproc import ROOT, BrokerProcess
from tests.brokerproc import szb as run_szb
from tests.e2e.conftest import PY, TOKENS, auth, write_broker_config


def szb(
    broker: BrokerProcess, *args: str, tenant: str = "team-a", columns: int = 80
) -> subprocess.CompletedProcess[str]:
    return run_szb(broker, TOKENS[tenant], *args, env={"COLUMNS": str(columns)})


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def spec(name: str, code: str, *, gpus: int = 0, accels: tuple[str, ...] = ()) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        name=name,
        command=[PY, "-c", code],
        runtime_estimate=duration_pb2.Duration(seconds=600),
        max_wait=duration_pb2.Duration(seconds=86400),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=gpus, any_of=list(accels))),
    )


def wait_for(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, states: set[int], tenant: str = "team-a"
) -> job_pb2.Job:
    deadline = time.monotonic() + 30
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job
        if job.state in states or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def error_info(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo")


def test_error_info_reasons_are_stable_upper_snake(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    cases = {
        "INVALID_ARGUMENT": lambda: stub.SubmitJob(
            pb.SubmitJobRequest(job=job_pb2.JobSpec()), metadata=auth("team-a")
        ),
        "NOT_FOUND": lambda: stub.GetJob(pb.GetJobRequest(id="j-nope"), metadata=auth("team-a")),
        "NO_ALLOWED_OFFER": lambda: stub.SubmitJob(
            pb.SubmitJobRequest(job=spec("too-big", "pass", gpus=64, accels=("A800",))),
            metadata=auth("team-a"),
        ),
        "UNAUTHENTICATED": lambda: stub.GetJob(pb.GetJobRequest(id="j-nope")),
    }
    for reason, call in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        got = error_info(err.value)
        assert got == reason and re.fullmatch(r"[A-Z][A-Z_]*", got), (reason, got)


def test_unknown_accelerator_is_a_field_error_with_a_suggestion(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub, tmp_path: Path
) -> None:
    good = pb.SubmitJobRequest(job=spec("fine", "pass"))
    typo = pb.SubmitJobRequest(job=spec("typo", "pass", gpus=1, accels=("A800", "A8000")))
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(pb.SubmitJobsRequest(requests=[good, typo]), metadata=auth("team-a"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)).Unpack(bad)
    [violation] = bad.field_violations
    assert violation.field == "requests[1].job.resources.accelerators.any_of[1]"
    assert "'A8000'" in violation.description and "did you mean 'A800'" in violation.description
    # A known accelerator in another spelling is not an error.
    ok = stub.SubmitJob(
        pb.SubmitJobRequest(job=spec("spelled", "pass", gpus=1, accels=("a-800",))), metadata=auth("team-a")
    )
    assert ok.job.id
    # The CLI shows the field and the suggestion; a misspelt job field gets one too.
    job = tmp_path / "typo.yaml"
    job.write_text(
        f"name: typo\ncommand: [{PY}, -c, pass]\nruntime_estimate: 1m\n"
        "resources:\n  accelerators: {count: 1, any_of: [H8OO]}\n"
    )
    out = szb(broker, "submit", str(job))
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr
    assert "resources.accelerators.any_of[0]" in out.stderr and "did you mean 'H800'" in out.stderr
    job.write_text(f"name: typo\ncommand: [{PY}, -c, pass]\nruntime_estimate: 1m\nmax_wiat: 1h\n")
    out = szb(broker, "submit", str(job))
    assert (
        out.returncode == 1
        and f"{job}:4:1: error: max_wiat: unknown field (did you mean 'max_wait'?)" in out.stderr
    )


def test_a_batch_refused_for_one_file_names_the_file(broker: BrokerProcess, tmp_path: Path) -> None:
    """Several files go as one batch, and the server names the bad one by its place in it only
    (`requests[1]`, or nothing for a placement refusal): the CLI says which file that is."""
    files = []
    for name, accels in (("ok1", "[A800]"), ("typo", "[H8OO]"), ("ok2", "[A800]"), ("huge", "[H100]")):
        count = 8 if name == "huge" else 1
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"name: {name}\ncommand: [{PY}, -c, pass]\nruntime_estimate: 1m\n"
            f"resources:\n  accelerators: {{count: {count}, any_of: {accels}}}\n"
        )
        files.append(str(path))
    before = len(szb(broker, "list", "--all", "-o", "json", tenant="team-b").stdout)
    out = szb(broker, "submit", *files[:3], tenant="team-b")
    assert out.returncode == 1 and f"(requests[1] is {files[1]})" in out.stderr, out.stderr
    out = szb(broker, "submit", files[0], files[3], tenant="team-b")  # no offer has 8 H100
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr, out.stderr
    assert f"(requests[1] is {files[3]})" in out.stderr, out.stderr
    assert len(szb(broker, "list", "--all", "-o", "json", tenant="team-b").stdout) == before  # none stored


def test_job_shows_placement_cost_and_times(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    job = stub.SubmitJob(
        pb.SubmitJobRequest(job=spec("placed", "import time; time.sleep(1.5)", gpus=2, accels=("A800",))),
        metadata=auth("team-a"),
    ).job
    assert job.pending_reason and not job.HasField("start_time")
    done = wait_for(stub, job.id, {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED})
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.message
    assert (done.site, done.instance_type, done.accelerator, done.accelerator_count) == (
        "local",
        "a800",
        "A800",
        2,
    )
    assert done.HasField("start_time") and done.HasField("end_time")
    ran = done.end_time.ToDatetime() - done.start_time.ToDatetime()
    assert ran.total_seconds() >= 1.0
    # 14 CNY per hour for the a800 partition's offer, for at least the 1.5 s it ran.
    assert done.cost_currency == "CNY" and done.cost_so_far >= 14.0 * 1.5 / 3600
    assert done.cost_so_far < 14.0 * 60 / 3600
    assert not done.pending_reason


def test_list_full_ids_pending_reason_wide_and_pages(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub, request: pytest.FixtureRequest
) -> None:
    # Four A800s exist: a holder takes them all (long enough for the dozen CLI calls below on a loaded
    # machine; it is cancelled at the end), the next job waits and says why.
    holder = stub.SubmitJob(
        pb.SubmitJobRequest(job=spec("holder", "import time; time.sleep(900)", gpus=4, accels=("A800",))),
        metadata=auth("team-b"),
    ).job
    request.addfinalizer(lambda: stub.CancelJob(pb.CancelJobRequest(id=holder.id), metadata=auth("team-b")))
    wait_for(stub, holder.id, {job_pb2.JOB_STATE_RUNNING}, tenant="team-b")
    waiting = stub.SubmitJob(
        pb.SubmitJobRequest(job=spec("waiter", "pass", gpus=4, accels=("A800",))), metadata=auth("team-b")
    ).job
    deadline = time.monotonic() + 15
    while (
        "wait" not in stub.GetJob(pb.GetJobRequest(id=waiting.id), metadata=auth("team-b")).job.pending_reason
    ):
        assert time.monotonic() < deadline, "no waiting reason"
        time.sleep(0.2)
    # Obs. 10: the waiting job is counted in its partition's queue, typed status fields are set.
    status = stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-b"))
    a800 = next(p for p in status.partitions if p.partition == "a800")
    assert a800.queued_jobs >= 1 and a800.free == 0, status
    assert status.currency == "CNY"
    team_b = next(t for t in status.tenants if t.tenant == "team-b")
    assert not team_b.HasField("budget")  # no budget: unset, not 0
    out = szb(broker, "list", "--state", "QUEUED", "--state", "RUNNING", tenant="team-b", columns=80)
    assert out.returncode == 0, out.stderr
    assert holder.id in out.stdout and waiting.id in out.stdout, out.stdout  # never cut at 80 columns
    assert "REASON" in out.stdout
    row = next(line for line in out.stdout.splitlines() if waiting.id in line)
    assert "wait" in row
    for width in (60, 40):  # narrower than the id and state need: drawn wider, never cut with "…"
        narrow = szb(broker, "list", "--state", "QUEUED", tenant="team-b", columns=width)
        assert waiting.id in narrow.stdout and "QUEUED" in narrow.stdout, narrow.stdout
    # `szb get` of the waiting job answers why it waits in full, not cut to the column's width.
    got = szb(broker, "get", waiting.id, tenant="team-b", columns=80)
    assert got.returncode == 0, got.stderr
    whole = [line for line in got.stdout.splitlines() if line.startswith("reason: ")]
    reason = stub.GetJob(pb.GetJobRequest(id=waiting.id), metadata=auth("team-b")).job.pending_reason
    assert len(reason) > 40 and len(whole) == 1, got.stdout
    minutes = re.compile(r"\d+")  # the expected wait may tick between the two reads
    assert minutes.sub("N", whole[0]) == minutes.sub("N", f"reason: {reason}"), got.stdout
    listed = json.loads(szb(broker, "list", "-o", "json", "--state", "QUEUED", tenant="team-b").stdout)
    mine = next(j for j in listed["jobs"] if j["id"] == waiting.id)
    assert "wait" in mine["pending_reason"]
    wide = szb(broker, "list", "--wide", "--state", "RUNNING", tenant="team-b", columns=80)
    line = next(line for line in wide.stdout.splitlines() if holder.id in line)
    assert "a800" in line and "4xA800" in line and "CNY" in line
    # Pages: --page-token continues exactly where the last page stopped.
    first = szb(broker, "list", "--page-size", "1", tenant="team-b")
    token = re.search(r"--page-token (\S+)", first.stdout)
    assert token, first.stdout
    second = json.loads(
        szb(
            broker, "list", "--page-size", "1", "--page-token", token.group(1), "-o", "json", tenant="team-b"
        ).stdout
    )
    whole = json.loads(szb(broker, "list", "--page-size", "2", "-o", "json", tenant="team-b").stdout)
    assert [j["id"] for j in second["jobs"]] == [whole["jobs"][1]["id"]]
    # A negative page size is a usage error (exit 2), a made-up page token the server's refusal.
    bad = szb(broker, "list", "--page-size", "-3", tenant="team-b")
    assert bad.returncode == 2 and "--page-size: must be >= 0" in bad.stderr, bad.stderr
    bad = szb(broker, "list", "--page-token", "garbage", tenant="team-b")
    assert bad.returncode == 1 and "page_token: is not a token this server issued" in bad.stderr, bad.stderr
    for job_id in (holder.id, waiting.id):
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("team-b"))


def test_list_keeps_ids_and_states_whole_beside_a_long_job_name(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    """A 63-character job name (the most a name may have) on an 80-column terminal: the id and
    the state were cut to 'j-1a2385dd4d80…' and '…' while the name kept its width."""
    name = "finetune-glm-6b-lora-rank-16-alpha-32-lr-2e-4-epoch-3-seed-42-b"
    job = stub.SubmitJob(pb.SubmitJobRequest(job=spec(name, "pass")), metadata=auth("team-a")).job
    wait_for(stub, job.id, {job_pb2.JOB_STATE_SUCCEEDED})
    out = szb(broker, "list", "--page-size", "5", columns=80)
    assert out.returncode == 0, out.stderr
    row = next((line for line in out.stdout.splitlines() if job.id in line), None)
    assert row is not None and "SUCCEEDED" in row, out.stdout


def test_submit_and_list_keep_ids_whole_beside_a_long_accelerator_list(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub, tmp_path: Path
) -> None:
    """A queued job that accepts several accelerators (the README's finetune example's
    `2xA800|H800|Ascend910B`) on an 80-column terminal: the name was cut to its minimum and
    the id then cut to 'j-1a23881ff350000f095…', as nothing else gave way."""
    job_file = tmp_path / "many-accels.yaml"
    job_file.write_text(
        f"name: ft\ncommand: [{json.dumps(PY)}, -c, pass]\nruntime_estimate: 10m\n"
        "resources: {accelerators: {count: 1, any_of: [A800, H800, Ascend910B, A100-80GB]}}\n"
    )
    out = szb(broker, "submit", str(job_file), "-o", "json")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)[0]["id"]
    table = szb(broker, "get", job_id, columns=80)
    assert table.returncode == 0, table.stderr
    assert job_id in table.stdout, table.stdout
    submitted = szb(broker, "submit", str(job_file), columns=80)
    assert submitted.returncode == 0, submitted.stderr
    row = next((line for line in submitted.stdout.splitlines() if "QUEUED" in line), None)
    assert row is not None and re.search(r"j-[0-9a-f]{21}\b", row), submitted.stdout


def test_a_full_cpu_partition_shows_the_wait_its_running_jobs_leave(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    """szb status' EXPECTED WAIT of the local CPU partition: with all eight CPUs held by a job
    estimated at ten minutes, a CPU job waits until it ends (as explain projects it: ten minutes
    at most, less with the learned ratio of this module's quick jobs), not 0 as the partition line
    said, which counted accelerator-hours only."""
    holder_spec = spec("cpu-holder", "import time; time.sleep(90)")
    holder_spec.resources.cpus = 8
    holder = stub.SubmitJob(pb.SubmitJobRequest(job=holder_spec), metadata=auth("team-b")).job
    try:
        assert wait_for(stub, holder.id, {job_pb2.JOB_STATE_RUNNING}, tenant="team-b").state == (
            job_pb2.JOB_STATE_RUNNING
        )
        deadline = time.monotonic() + 15
        while True:
            status = stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-b"))
            cpu = next(p for p in status.partitions if p.partition == "cpu")
            if cpu.free == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert cpu.free == 0 and cpu.total == 8, cpu
        one_cpu = spec("one-cpu", "pass")
        explained = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=one_cpu), metadata=auth("team-b"))
        projected = explanation_from_proto(explained.explanation)["decision"]["projection"]["wait_s"]
        assert 0 < projected <= 600 and cpu.expected_wait_seconds == pytest.approx(projected, abs=15), cpu
    finally:
        stub.CancelJob(pb.CancelJobRequest(id=holder.id), metadata=auth("team-b"))
        wait_for(stub, holder.id, {job_pb2.JOB_STATE_CANCELLED}, tenant="team-b")


def test_closed_pipe_ends_quietly(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub
) -> None:
    reqs = [pb.SubmitJobRequest(job=spec(f"piped-{i}", "pass")) for i in range(40)]
    stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs), metadata=auth("team-a"))
    env = {
        **os.environ,
        "SZB_SERVER": broker.address,
        "SZB_TOKEN": TOKENS["team-a"],
        "GRPC_VERBOSITY": "ERROR",
    }
    for fmt in ("json", "table"):
        out = subprocess.run(
            [
                "bash",
                "-c",
                f"set -o pipefail; {sys.executable} -m broker.cli list -o {fmt} | head -n 1; "
                "echo status=${PIPESTATUS[0]}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
        assert re.search(r"status=(0|141)\b", out.stdout), out.stdout


def test_spend_for_all_tenants_prints_no_fake_budget(broker: BrokerProcess) -> None:
    # team-a is not internal: it may only see itself; its budget is unset (none), not 0.
    out = szb(broker, "spend", "-o", "json")
    body = json.loads(out.stdout)
    assert body["budget"] is None and body["budget_left"] is None
    table = szb(broker, "spend")
    assert "Budget 0.00" not in table.stdout and "No monthly budget limit" in table.stdout


def test_submit_wait_and_watch_print_the_jobs_output_and_events_unfolded(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """A job's output is shown as it wrote it, and each event is one line, however narrow the terminal."""
    long_line = "0" * 149 + "7"
    json_line = json.dumps({"k": " ".join(["value"] * 15)})
    code = f"print({long_line!r}); print({json_line!r})"
    job = tmp_path / "longline.yaml"
    job.write_text(f"name: longline\ncommand: [{PY}, -c, {json.dumps(code)}]\nruntime_estimate: 1m\n")
    done = szb(broker, "submit", str(job), "--wait", columns=80)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert long_line in lines and json_line in lines, done.stdout
    # An event longer than the terminal stays on one line, so line-based tools see all of it.
    sleeper = tmp_path / "sleeper.yaml"
    sleeper.write_text(
        f"name: sleeper\ncommand: [{PY}, -c, 'import time; time.sleep(120)']\nruntime_estimate: 1m\n"
    )
    [created] = json.loads(szb(broker, "submit", str(sleeper), "-o", "json").stdout)
    cancelled = szb(broker, "cancel", created["id"])
    assert cancelled.returncode == 0 and "nothing cancelled" not in cancelled.stderr, cancelled.stderr
    watched = szb(broker, "watch", created["id"], columns=80)
    assert watched.returncode == 0, watched.stderr
    [event] = [ln for ln in watched.stdout.splitlines() if "CANCELLED" in ln]
    assert event.endswith("cancelled: cancelled by team-a (tenant)"), watched.stdout
    # In Beijing time with its date, as `szb audit` shows it (a review: a bare UTC clock).
    shown = datetime.strptime(event[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone(timedelta(hours=8)))
    assert abs((datetime.now(UTC) - shown).total_seconds()) < 600, event
    # Review: cancelling a job that had already ended said nothing, as if it had been cancelled.
    again = szb(broker, "cancel", created["id"])
    assert again.returncode == 0, again.stderr
    assert f"{created['id']} had already ended (CANCELLED): nothing cancelled" in again.stderr, again.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--since", "2000-01-01"), "since: a range may span at most 20 years"),  # (read as 0.00)
        (("--since", "0001-01-01"), "is too far back"),  # (a traceback)
        (("--until", "2020-11-15"), "until: must be after since (here the start of this month)"),
        (("--since", "2099-01-01"), "since: must be in the past"),
        # Both bounds given: the far one is named (a review: `since` was, for a far `until`).
        (("--since", "2026-01-01", "--until", "8999-12-31"), "until: a range may span at most 20 years"),
    ],
)
def test_a_spend_range_that_reads_nothing_is_refused_naming_its_bound(
    broker: BrokerProcess, args: tuple[str, ...], said: str
) -> None:
    """Held-out review: each printed an empty report, total 0.00 and exit 0 (or a traceback)."""
    out = szb(broker, "spend", *args)
    assert out.returncode != 0 and said in out.stderr, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr


def test_spend_lines_add_up_to_the_total(tmp_path: Path) -> None:
    """Review: five lines of 0.01 under a total of 0.07 (each line rounded, the total summed raw);
    then totals of the rounded lines, which moved with the grouping (--by day 0.30, else 0.36)."""
    from datetime import UTC, datetime

    from broker.burst.money import month_of
    from broker.model import AttemptState, JobSpec, JobState, Offer, SiteId, TenantId
    from broker.store import SpendEntry, SqliteStore
    from broker.store.base import Submission

    config = write_broker_config(tmp_path)
    now = datetime.now(UTC)
    store = SqliteStore(tmp_path / "data" / "broker.db")
    spec = JobSpec.model_validate({"name": "x", "command": ["true"], "runtime_estimate": "1m"})
    for n in range(5):
        ((job, _),) = store.submit(TenantId("team-a"), [Submission(spec)], now)
        site = SiteId(f"cloud-{n}")
        offer = Offer(site=site, instance_type="t", accelerator=None, count=0, price_per_hour=1.0)
        attempt = store.create_attempt(job.id, site, offer, f"tok-{n}", now)
        entry = SpendEntry(TenantId("team-a"), site, job.id, attempt.id, month_of(now), reserved=0.014)
        assert store.reserve_spend(entry, tenant_limit=None, global_limit=None)
        store.update_attempt(attempt.id, now, backend_id=f"i-{n}", state=AttemptState.SUCCEEDED)
        for state in (JobState.PLACING, JobState.PROVISIONING, JobState.RUNNING, JobState.SUCCEEDED):
            store.transition(job.id, state, now)
        store.settle_spend(attempt.id, spent=0.014, voucher=0.0)  # a burst of 50 s at 1 CNY/h
    store.close()
    proc = BrokerProcess(config)
    proc.start()
    try:
        for by in ((), ("--by", "day"), ("--by", "site"), ("--by", "tenant")):
            body = json.loads(szb(proc, "spend", *by, "-o", "json").stdout)
            shown = [line["spent"] for line in body["lines"]]
            assert body["total_spent"] == 0.07, body  # the true total, whatever the grouping
            assert round(sum(shown), 2) == 0.07 and set(shown) <= {0.01, 0.02, 0.07}, (by, shown)
    finally:
        proc.stop()


def test_szb_submit_of_many_large_jobs_names_every_one(
    broker: BrokerProcess, stub: broker_service_pb2_grpc.BrokerServiceStub, tmp_path: Path
) -> None:
    """Review: `szb submit` of 60 job files of 60 KB printed the last rows with an empty NAME and
    `-` for accelerators: the broker leaves the specs out of a large answer, and szb printed the
    empty spec as the job's. It fills in the specs it sent."""
    files = []
    for i in range(60):
        path = tmp_path / f"big-{i:02}.yaml"
        path.write_text(
            f"name: big-{i:02}\ncommand: [sleep, '0']\nruntime_estimate: 1m\n"
            f"resources: {{accelerators: {{count: 1, any_of: [A800]}}}}\nenv: {{PAYLOAD: {'p' * 60_000}}}\n"
        )
        files.append(str(path))
    out = szb(broker, "submit", *files, "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [j["spec"]["name"] for j in got] == [f"big-{i:02}" for i in range(60)]
    for j in got:
        stub.CancelJob(pb.CancelJobRequest(id=j["id"]), metadata=auth("team-a"))
