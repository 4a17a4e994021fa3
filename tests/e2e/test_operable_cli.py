"""What an operator reads from `szb` against a running `szb serve` with a tokens file: whose job
it is, why a job waits at 80 columns, and what a refusal says (a review of issue 12, "Operable")."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.brokerproc import JOB_PYTHON, BrokerProcess
from tests.brokerproc import szb as run_szb
from tests.clouds.test_metrics_e2e import metrics_url, scrape, value
from tests.e2e.conftest import TOKENS, auth, write_broker_config

OPERATOR = "token-operator-oncall-0123456789"
Stub = broker_service_pb2_grpc.BrokerServiceStub


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("operable")
    config = write_broker_config(folder)
    with (folder / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("team-a", OPERATOR, Role.OPERATOR, "oncall") + "\n")
    with config.open("a") as f:
        f.write("tokens_reload_s: 0.2\nlog_format: json\n")
    proc = BrokerProcess(config, extra_env={"SZB_METRICS_LISTEN": "127.0.0.1:0"})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def szb(broker: BrokerProcess, token: str, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return run_szb(broker, token, *args, env={"COLUMNS": str(columns)})


def submit(stub: Stub, tenant: str, name: str, *, seconds: float = 60, gpus: int = 0) -> str:
    job = job_pb2.JobSpec(name=name, command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"])
    job.runtime_estimate.seconds = 600
    if gpus:
        job.resources.accelerators.count = gpus
        job.resources.accelerators.any_of.append("A800")
    return stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth(tenant)).job.id


def header(table: str) -> list[str]:
    line = next(line for line in table.splitlines() if "ID" in line and "STATE" in line)
    return [cell.strip() for cell in line.strip("┃│ ").replace("│", "┃").split("┃")]


def test_an_operator_sees_whose_job_it_is_in_get_and_every_wide_table(
    broker: BrokerProcess, stub: Stub
) -> None:
    """`szb get ID` (wide or not) had no TENANT column, and `szb list` showed one only when its
    page spanned two tenants, so `list --tenant X --wide` ("every column") never did."""
    job_id = submit(stub, "team-b", "whose")
    try:
        for args in (("get", job_id), ("get", job_id, "--wide"), ("list", "--tenant", "team-b", "--wide")):
            out = szb(broker, OPERATOR, *args)
            assert out.returncode == 0, out.stderr
            assert "TENANT" in header(out.stdout), (args, out.stdout)
            row = next(line for line in out.stdout.splitlines() if job_id in line)
            assert "team-b" in row, (args, out.stdout)
        # A tenant's own --wide table is every column too.
        own = szb(broker, TOKENS["team-b"], "list", "--wide")
        assert "TENANT" in header(own.stdout), own.stdout
    finally:
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("team-b"))


def test_a_caller_without_a_token_is_told_so_in_plain_words(broker: BrokerProcess) -> None:
    """The bearer mask took the word after "bearer" in the broker's own message: `szb list` with
    no SZB_TOKEN printed "missing bearer [REDACTED] in 'authorization' metadata"."""
    out = szb(broker, "", "list")
    assert out.returncode == 1
    assert out.stderr == "szb: error: UNAUTHENTICATED: missing bearer token in 'authorization' metadata\n"


def reason_cell(table: str, job_id: str) -> str:
    """The REASON cell of the job's row, with the line below it when that line is the cell's rest."""
    lines = table.splitlines()
    at = next(i for i, line in enumerate(lines) if job_id in line)
    cells = [line.strip().strip("│").split("│") for line in lines[at : at + 2]]
    rest = cells[1][-1].strip() if len(cells) > 1 and not cells[1][0].strip() else ""
    return f"{cells[0][-1].strip()} {rest}".strip()


def test_a_waiting_jobs_reason_is_readable_at_80_columns(broker: BrokerProcess, stub: Stub) -> None:
    """An operator's `szb list` at 80 columns cut REASON to `waiti…` (it kept only len("REASON")
    characters while TENANT and the rest kept their width): it must say what the job waits for."""
    holder = submit(stub, "team-b", "holder", seconds=300, gpus=4)  # all four A800s
    waiting: list[str] = []
    try:
        # Running before the others come: decided in one pass, fair share may put team-a's waiter
        # first (a CI run saw it run and finish while the holder waited).
        deadline = time.monotonic() + 90  # (a loaded CI box starts the holder's run slowly)
        while not reason_of(stub, holder).startswith("JOB_STATE_RUNNING"):
            assert time.monotonic() < deadline, f"the holder never ran: {reason_of(stub, holder)}"
            time.sleep(0.2)
        waiting += [submit(stub, "team-a", "waiter-a", gpus=4), submit(stub, "team-b", "waiter-b", gpus=4)]
        deadline = time.monotonic() + 90
        while not all("wait" in (said := [reason_of(stub, j) for j in waiting])[i] for i in range(2)):
            assert time.monotonic() < deadline, f"no waiting reason: {said}"
            time.sleep(0.2)
        out = szb(broker, OPERATOR, "list", "--state", "QUEUED", "--state", "RUNNING", columns=80)
        assert out.returncode == 0, out.stderr
        assert max(len(line) for line in out.stdout.splitlines()) <= 80, out.stdout
        assert "TENANT" in header(out.stdout), out.stdout
        for job_id in waiting:
            reason = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth_op()).job.pending_reason
            shown = reason_cell(out.stdout, job_id).rstrip("…")
            # "waiting on-prem: expected wait 10 min is…": the kind of wait and how long.
            assert len(shown) >= 30 and reason.startswith(shown), (reason, out.stdout)
            assert "expected wait" in shown, out.stdout
    finally:
        for job_id in (holder, *waiting):
            stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth_op())


def reason_of(stub: Stub, job_id: str) -> str:
    job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth_op()).job
    return f"{job_pb2.JobState.Name(job.state)}: {job.pending_reason or job.message}"


def auth_op() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {OPERATOR}"),)


def test_a_tenant_naming_another_tenant_gets_one_answer_whatever_it_asks(broker: BrokerProcess) -> None:
    """`szb list --tenant team-b` by team-a was PERMISSION_DENIED ("only operators may list
    another tenant's jobs") where `spend` and `offers` said NOT_FOUND: one answer for every name,
    real or made up, so a tenant learns nothing of which tenants exist."""
    for named in ("team-b", "no-such-team"):
        for command in ("list", "spend", "offers"):
            out = szb(broker, TOKENS["team-a"], command, "--tenant", named)
            assert out.returncode == 1, (command, named, out.stdout)
            assert out.stderr == f"szb: error: NOT_FOUND: tenant '{named}' not found\n", (command, named)


def test_a_refused_tokens_file_is_one_line_with_its_event_and_a_metric(broker: BrokerProcess) -> None:
    """A refused tokens file was logged as one ERROR line per problem plus "keeping the last good
    tokens file", none with an `event`, and counted nowhere, where a refused policy is one line
    with `event: reload` and szb_policy_reloads_total{result="refused"}."""
    tokens = broker.config.parent / "tokens.yaml"
    good = tokens.read_text()
    url = metrics_url(broker)
    before = len(broker.output)
    tokens.write_text(good + "  - {tenant: team-b, role: admin, sha256: abc}\n")
    try:
        deadline = time.monotonic() + 15
        while value(scrape(url, OPERATOR), "szb_tokens_reloads_total", result="refused") < 1:
            assert time.monotonic() < deadline, "no refused tokens reload counted"
            time.sleep(0.2)
        assert broker.said("tokens reload refused")
        lines = [json.loads(x) for x in broker.output[before:] if x.startswith("{")]
        refused = [x for x in lines if x.get("event") == "tokens_reload"]
        assert len(refused) == 1 and refused[0]["level"] == "ERROR", lines
        assert not [x for x in lines if x["level"] == "ERROR" and x not in refused], lines
        [line] = refused
        assert line["result"] == "refused" and line["source"] == str(tokens), line
        assert "tokens.3.role" in line["message"], line
        assert "keeping the last good tokens file (3 entries)" in line["message"], line
    finally:
        tokens.write_text(good)
    deadline = time.monotonic() + 15
    # Mended back to the tokens in force: `unchanged`, and one line that says the refusal is over.
    while value(scrape(url, OPERATOR), "szb_tokens_reloads_total", result="unchanged") < 1:
        assert time.monotonic() < deadline, "the mended tokens file's reload not counted"
        time.sleep(0.2)
    assert broker.said("refusal is over")
